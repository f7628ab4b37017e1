//! One line of remote command output as a terminal would have shown it: colours (SGR)
//! kept as style runs, tabs expanded to the next multiple of 8, `\r` and backspace moving
//! the cursor so later text overwrites earlier text (a `\r` progress line ends as its last
//! state), `CSI K` erasing, every other escape sequence, control character, C1 control and
//! bidi override dropped. Nothing from the remote side reaches our terminal but printable
//! text and the styles we re-render ourselves.
//!
//! Why not `ansi-to-tui`: it treats `\r` as a line break (8.0.1 `parser.rs`: `newline`
//! accepts a lone `\r`) and passes tabs on, which ratatui then draws as nothing: exactly the
//! two things to fix. The escape-sequence state machine is `anstyle-parse` (the vte parser,
//! kept by rust-cli), the style type `anstyle` (ratatui converts it, and it renders itself
//! back to SGR for headless output).

use anstyle::{Ansi256Color, AnsiColor, Color, Effects, RgbColor, Style};
use anstyle_parse::{DefaultCharAccumulator, Params, Parser, Perform};

/// What a tab becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tabs {
    /// Spaces up to the next multiple of 8 (the console: ratatui draws a tab as nothing).
    #[default]
    Expand,
    /// Kept as a tab character (a pipe: `cut -f` and spreadsheets still see columns).
    Keep,
}

/// A cooked line: plain text (no control character at all, tabs aside under
/// [`Tabs::Keep`]) and where its style changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cooked {
    pub text: String,
    /// `(byte offset in text, style from there on)`, ascending; empty when the line has no
    /// colour at all (the common case costs nothing).
    pub runs: Vec<(u32, Style)>,
}

impl Cooked {
    /// The line with its colours as SGR sequences (for a terminal), ending in a reset.
    pub fn to_sgr(&self) -> String {
        if self.runs.is_empty() {
            return self.text.clone();
        }
        let mut out = String::with_capacity(self.text.len() + self.runs.len() * 12);
        let mut pos = 0usize;
        for (i, (start, style)) in self.runs.iter().enumerate() {
            let start = *start as usize;
            out.push_str(&self.text[pos..start]);
            let end = self
                .runs
                .get(i + 1)
                .map_or(self.text.len(), |r| r.0 as usize);
            if *style != Style::new() && end > start {
                out.push_str(&format!("{}", style.render()));
                out.push_str(&self.text[start..end]);
                out.push_str(&format!("{}", style.render_reset()));
            } else {
                out.push_str(&self.text[start..end]);
            }
            pos = end;
        }
        out.push_str(&self.text[pos..]);
        out
    }

    /// The pieces of the line with their style, for a renderer.
    pub fn spans(&self) -> impl Iterator<Item = (&str, Style)> + '_ {
        spans(&self.text, &self.runs)
    }
}

/// `text` cut at each run start, each piece with its style (the default style before the
/// first run).
pub fn spans<'a>(
    text: &'a str,
    runs: &'a [(u32, Style)],
) -> impl Iterator<Item = (&'a str, Style)> + 'a {
    let first = runs.first().map_or(text.len(), |r| r.0 as usize);
    let head = (first > 0).then(|| (&text[..first], Style::new()));
    head.into_iter()
        .chain(runs.iter().enumerate().filter_map(|(i, (s, st))| {
            let s = *s as usize;
            let e = runs.get(i + 1).map_or(text.len(), |r| r.0 as usize);
            (e > s).then(|| (&text[s..e], *st))
        }))
}

/// Whether `line` can be taken as it is: nothing but printable characters (most output;
/// callers skip [`cook`] and its copy then).
pub fn plain(line: &str) -> bool {
    !line
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

/// Cooks one line of output (see the module doc).
pub fn cook(line: &str, tabs: Tabs) -> Cooked {
    if plain(line) {
        return Cooked {
            text: line.to_owned(),
            runs: Vec::new(),
        };
    }
    let mut screen = Screen {
        tabs,
        ..Screen::default()
    };
    let mut parser = Parser::<DefaultCharAccumulator>::new();
    let mut buf = [0u8; 4];
    for c in line.chars() {
        // A C1 control (U+0080..U+009F) is its 7-bit form `ESC` + (c - 0x40), as a terminal
        // reading it would take it: `U+009B 2 J` is a whole CSI, dropped whole.
        if ('\u{80}'..='\u{9f}').contains(&c) {
            parser.advance(&mut screen, 0x1b);
            parser.advance(&mut screen, c as u8 - 0x40);
            continue;
        }
        for b in c.encode_utf8(&mut buf).bytes() {
            parser.advance(&mut screen, b);
        }
    }
    screen.finish()
}

/// One cell of the line: where its text is in the arena, its style, how many columns it
/// takes (0 for the right half of a wide character).
#[derive(Clone, Copy)]
struct Cell {
    start: u32,
    end: u32,
    style: Style,
    width: u8,
}

/// A one-line terminal.
#[derive(Default)]
struct Screen {
    tabs: Tabs,
    arena: String,
    cells: Vec<Cell>,
    col: usize,
    style: Style,
}

impl Screen {
    fn blank(&self) -> Cell {
        Cell {
            start: 0,
            end: 0,
            style: Style::new(),
            width: 1,
        }
    }

    /// Writes `c` (`width` columns) at the cursor and moves it on.
    fn put(&mut self, c: char, width: usize) {
        let start = self.arena.len() as u32;
        self.arena.push(c);
        let end = self.arena.len() as u32;
        let col = self.col;
        while self.cells.len() < col + width {
            self.cells.push(self.blank());
        }
        // Overwriting half of a wide character blanks its other half.
        if self.cells[col].width == 0 && col > 0 {
            self.cells[col - 1] = self.blank();
        }
        if let Some(next) = self.cells.get(col + width)
            && next.width == 0
        {
            self.cells[col + width] = self.blank();
        }
        self.cells[col] = Cell {
            start,
            end,
            style: self.style,
            width: width as u8,
        };
        if width == 2 {
            self.cells[col + 1] = Cell {
                start: end,
                end,
                style: self.style,
                width: 0,
            };
        }
        self.col += width;
    }

    fn finish(self) -> Cooked {
        let mut text = String::with_capacity(self.arena.len());
        let mut runs: Vec<(u32, Style)> = Vec::new();
        let mut current = Style::new();
        for cell in &self.cells {
            if cell.width == 0 {
                continue;
            }
            if cell.style != current {
                runs.push((text.len() as u32, cell.style));
                current = cell.style;
            }
            if cell.end == cell.start {
                text.push(' ');
            } else {
                text.push_str(&self.arena[cell.start as usize..cell.end as usize]);
            }
        }
        Cooked { text, runs }
    }

    fn sgr(&mut self, params: &Params) {
        let mut it = params.iter();
        if params.is_empty() {
            self.style = Style::new();
            return;
        }
        while let Some(p) = it.next() {
            let code = p.first().copied().unwrap_or(0);
            let s = self.style;
            self.style = match code {
                0 => Style::new(),
                1 => s.effects(s.get_effects() | Effects::BOLD),
                2 => s.effects(s.get_effects() | Effects::DIMMED),
                3 => s.effects(s.get_effects() | Effects::ITALIC),
                4 => s.effects(s.get_effects() | Effects::UNDERLINE),
                5 | 6 => s.effects(s.get_effects() | Effects::BLINK),
                7 => s.effects(s.get_effects() | Effects::INVERT),
                8 => s.effects(s.get_effects() | Effects::HIDDEN),
                9 => s.effects(s.get_effects() | Effects::STRIKETHROUGH),
                21 | 22 => s.effects(s.get_effects() - Effects::BOLD - Effects::DIMMED),
                23 => s.effects(s.get_effects() - Effects::ITALIC),
                24 => s.effects(s.get_effects() - Effects::UNDERLINE),
                25 => s.effects(s.get_effects() - Effects::BLINK),
                27 => s.effects(s.get_effects() - Effects::INVERT),
                28 => s.effects(s.get_effects() - Effects::HIDDEN),
                29 => s.effects(s.get_effects() - Effects::STRIKETHROUGH),
                30..=37 => s.fg_color(Some(ansi(code - 30, false))),
                39 => s.fg_color(None),
                40..=47 => s.bg_color(Some(ansi(code - 40, false))),
                49 => s.bg_color(None),
                90..=97 => s.fg_color(Some(ansi(code - 90, true))),
                100..=107 => s.bg_color(Some(ansi(code - 100, true))),
                38 | 48 => {
                    // `38;5;n`, `38;2;r;g;b`, or the colon forms `38:5:n`, `38:2::r:g:b`.
                    let color = if p.len() > 1 {
                        extended(&p[1..])
                    } else {
                        let kind = it.next().and_then(|k| k.first().copied());
                        match kind {
                            Some(5) => it
                                .next()
                                .and_then(|n| n.first())
                                .map(|&n| Color::Ansi256(Ansi256Color(n.min(255) as u8))),
                            Some(2) => {
                                let mut c = || it.next().and_then(|v| v.first().copied());
                                match (c(), c(), c()) {
                                    (Some(r), Some(g), Some(b)) => Some(rgb(r, g, b)),
                                    _ => None,
                                }
                            }
                            _ => None,
                        }
                    };
                    if code == 38 {
                        s.fg_color(color.or(s.get_fg_color()))
                    } else {
                        s.bg_color(color.or(s.get_bg_color()))
                    }
                }
                _ => s,
            };
        }
    }
}

fn rgb(r: u16, g: u16, b: u16) -> Color {
    Color::Rgb(RgbColor(
        r.min(255) as u8,
        g.min(255) as u8,
        b.min(255) as u8,
    ))
}

/// The colon form's sub-parameters after 38/48.
fn extended(sub: &[u16]) -> Option<Color> {
    match sub {
        [5, n, ..] => Some(Color::Ansi256(Ansi256Color((*n).min(255) as u8))),
        // `38:2:CS:r:g:b` (with a colour space id) or `38:2:r:g:b`.
        [2, _, r, g, b, ..] => Some(rgb(*r, *g, *b)),
        [2, r, g, b] => Some(rgb(*r, *g, *b)),
        _ => None,
    }
}

fn ansi(n: u16, bright: bool) -> Color {
    use AnsiColor::*;
    let base = [Black, Red, Green, Yellow, Blue, Magenta, Cyan, White][(n as usize) & 7];
    Color::Ansi(if bright { base.bright(true) } else { base })
}

impl Perform for Screen {
    fn print(&mut self, c: char) {
        // The parser hands C1 controls and bidi overrides over as characters.
        if !plain(c.encode_utf8(&mut [0; 4])) {
            return;
        }
        match unicode_width::UnicodeWidthChar::width(c) {
            Some(0) | None => {
                // A combining mark joins the character before it.
                if self.col > 0
                    && let Some(prev) = self.cells.get_mut(self.col - 1)
                    && prev.width > 0
                    && prev.end as usize == self.arena.len()
                {
                    self.arena.push(c);
                    prev.end = self.arena.len() as u32;
                }
            }
            Some(w) => self.put(c, w.min(2)),
        }
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\t' => match self.tabs {
                Tabs::Expand => {
                    let next = (self.col / 8 + 1) * 8;
                    while self.cells.len() < next {
                        self.cells.push(self.blank());
                    }
                    self.col = next;
                }
                Tabs::Keep => self.put('\t', 1),
            },
            b'\r' => self.col = 0,
            0x08 => self.col = self.col.saturating_sub(1),
            _ => {}
        }
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: u8) {
        if ignore || !intermediates.is_empty() {
            return;
        }
        let first = params
            .iter()
            .next()
            .and_then(|p| p.first().copied())
            .unwrap_or(0) as usize;
        match action {
            b'm' => self.sgr(params),
            // Erase in line: to the end, to the start, all.
            b'K' => match first {
                0 => self.cells.truncate(self.col),
                1 => {
                    let end = (self.col + 1).min(self.cells.len());
                    for i in 0..end {
                        self.cells[i] = self.blank();
                    }
                }
                _ => self.cells.clear(),
            },
            // Cursor forward, back, to a column: what progress meters use besides `\r`.
            b'C' => self.col += first.max(1),
            b'D' => self.col = self.col.saturating_sub(first.max(1)),
            b'G' => self.col = first.max(1) - 1,
            _ => {}
        }
        // A cursor moved past the end: the cells in between are blank.
        self.col = self.col.min(4096);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        cook(s, Tabs::Expand).text
    }

    #[test]
    fn plain_lines_are_taken_as_they_are() {
        let c = cook("app-1.4.2 é 日本", Tabs::Expand);
        assert_eq!(c.text, "app-1.4.2 é 日本");
        assert!(c.runs.is_empty());
    }

    #[test]
    fn colours_become_runs() {
        let c = cook("\u{1b}[32mOK\u{1b}[0m done", Tabs::Expand);
        assert_eq!(c.text, "OK done");
        let green = Style::new().fg_color(Some(Color::Ansi(AnsiColor::Green)));
        assert_eq!(c.runs, vec![(0, green), (2, Style::new())]);
        let c = cook("\u{1b}[1;38;5;208mX\u{1b}[38:2::1:2:3mY", Tabs::Expand);
        assert_eq!(c.text, "XY");
        assert_eq!(
            c.runs[0].1,
            Style::new()
                .bold()
                .fg_color(Some(Color::Ansi256(Ansi256Color(208))))
        );
        assert_eq!(
            c.runs[1].1.get_fg_color(),
            Some(Color::Rgb(RgbColor(1, 2, 3)))
        );
    }

    #[test]
    fn tabs_expand_to_the_next_stop() {
        assert_eq!(text("a\tb"), "a       b");
        assert_eq!(text("12345678\tx"), "12345678        x");
        assert_eq!(cook("a\tb", Tabs::Keep).text, "a\tb");
    }

    #[test]
    fn carriage_return_overwrites() {
        assert_eq!(text("10%\r20%\r100% done"), "100% done");
        assert_eq!(text("downloading 50%\rok"), "okwnloading 50%");
        assert_eq!(text("downloading 50%\r\u{1b}[Kok"), "ok");
        assert_eq!(text("\u{1b}[2K\rfinal"), "final");
        assert_eq!(text("abc\u{8}X"), "abX");
        assert_eq!(text("abc\u{1b}[1GX"), "Xbc");
    }

    #[test]
    fn everything_else_is_dropped() {
        assert_eq!(text("a\u{1b}]0;PWNED\u{7}b"), "ab");
        assert_eq!(text("a\u{1b}]52;c;Zm9v\u{1b}\\b"), "ab");
        assert_eq!(text("a\u{9b}2Jb\u{9d}0;t\u{9c}c"), "abc");
        assert_eq!(text("a\u{1b}[2J\u{1b}[H\u{1b}(Bb\u{7}\u{0}\u{7f}c"), "abc");
        assert_eq!(text("x\u{202e}y\u{85}z"), "xyz");
        assert_eq!(text("a\u{1b}"), "a");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(text("日本\rx"), "x 本");
        assert_eq!(text("e\u{301}\tx"), "e\u{301}       x");
    }

    #[test]
    fn sgr_round_trip_for_a_terminal() {
        let c = cook("\u{1b}[31mred\u{1b}[0m plain", Tabs::Keep);
        assert_eq!(c.to_sgr(), "\u{1b}[31mred\u{1b}[0m plain");
        assert_eq!(cook("no colour", Tabs::Keep).to_sgr(), "no colour");
    }

    proptest::proptest! {
        #[test]
        fn never_a_control_out(s in "(\u{1b}\\[[0-9;:]{0,8}[a-zA-Z]|\u{1b}\\][^\u{7}]{0,8}\u{7}|[a-z \t\r\u{0}-\u{1f}\u{7f}-\u{9f}日é])*") {
            let sgr_re = regex::Regex::new("\u{1b}\\[[0-9;]*m").unwrap();
            for tabs in [Tabs::Expand, Tabs::Keep] {
                let c = cook(&s, tabs);
                let ok = |ch: char| !ch.is_control() || (ch == '\t' && tabs == Tabs::Keep);
                proptest::prop_assert!(c.text.chars().all(ok), "{:?} -> {:?}", s, c.text);
                for (start, _) in &c.runs {
                    proptest::prop_assert!(c.text.is_char_boundary(*start as usize));
                }
                let sgr = c.to_sgr();
                // Only SGR sequences reach a terminal.
                let stripped = sgr_re.replace_all(&sgr, "");
                proptest::prop_assert_eq!(stripped.as_ref(), c.text.as_str());
            }
        }
    }
}
