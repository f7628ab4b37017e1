//! A real HTTP server on 127.0.0.1 (tiny_http on its own thread) for health checks and
//! webhooks: each path answers as its [`Behaviour`] says, counts its requests, and keeps
//! the bodies of the POSTs it received. Torn down on drop.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a path answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Always this status.
    Status(u16),
    /// 503 for the first `n` requests, 200 after.
    HealthyAfter(usize),
    /// These statuses in turn, the last one repeated once they run out.
    Sequence(Vec<u16>),
    /// Reads the request and never answers (until the server is dropped).
    Hang,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Behaviour>,
    hits: HashMap<String, usize>,
    posts: HashMap<String, Vec<String>>,
}

pub struct HttpServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts on a free port of 127.0.0.1. Unknown paths answer 404.
    pub fn start() -> HttpServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0"));
        let addr = server.server_addr().to_ip().expect("an IP listener");
        super::assert_loopback(addr.ip());
        let state: Arc<Mutex<State>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (srv, st, stp) = (server.clone(), state.clone(), stop.clone());
        let thread = std::thread::spawn(move || serve(&srv, &st, &stp));
        HttpServer {
            addr,
            server,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn route(&self, path: &str, b: Behaviour) {
        self.state.lock().unwrap().routes.insert(path.to_owned(), b);
    }

    /// Requests `path` received so far.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Bodies of the POSTs `path` received, in order.
    pub fn posts(&self, path: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .posts
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `path` has received `n` POSTs.
    pub fn wait_for_posts(&self, path: &str, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.posts(path).len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, state: &Mutex<State>, stop: &Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let mut req = match server.recv() {
            Ok(r) => r,
            Err(_) => break,
        };
        let path = req.url().split('?').next().unwrap_or("").to_owned();
        let mut body = String::new();
        let _ = req.as_reader().read_to_string(&mut body);
        let behaviour = {
            let mut st = state.lock().unwrap();
            let n = *st
                .hits
                .entry(path.clone())
                .and_modify(|h| *h += 1)
                .or_insert(1);
            if *req.method() == tiny_http::Method::Post {
                st.posts.entry(path.clone()).or_default().push(body);
            }
            st.routes.get(&path).cloned().map(|b| (b, n))
        };
        let status = match behaviour {
            None => 404,
            Some((Behaviour::Status(s), _)) => s,
            Some((Behaviour::HealthyAfter(k), n)) => {
                if n > k {
                    200
                } else {
                    503
                }
            }
            Some((Behaviour::Sequence(seq), n)) => {
                seq.get(n - 1).or(seq.last()).copied().unwrap_or(200)
            }
            Some((Behaviour::Hang, _)) => {
                // Hold the request, unanswered, on a thread of its own until shutdown.
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let _held = req;
                    let end = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
                continue;
            }
        };
        let _ = req.respond(
            tiny_http::Response::from_string(format!("status {status}\n")).with_status_code(status),
        );
    }
}
