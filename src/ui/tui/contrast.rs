//! WCAG 2 contrast of a theme's colours: every style that draws text must reach 4.5:1
//! against what it is drawn on (its own background, else the terminal's), every border
//! 3:1 (a non-text element). Named colours are taken as xterm's default palette, the
//! terminal's own foreground and background as a dark terminal's (`#d0d0d0` on black), or
//! a light one's (black on white) for a theme whose text is dark.

use super::theme::Theme;
use ratatui::style::{Color, Modifier, Style};

/// Text needs this much (WCAG 2 AA, normal text).
pub const TEXT: f64 = 4.5;
/// A border or other non-text element needs this much (WCAG 2.1 1.4.11).
pub const NON_TEXT: f64 = 3.0;

/// The terminal's default colours a theme is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    pub fg: (u8, u8, u8),
    pub bg: (u8, u8, u8),
}

pub const DARK: Terminal = Terminal {
    fg: (0xd0, 0xd0, 0xd0),
    bg: (0, 0, 0),
};
pub const LIGHT: Terminal = Terminal {
    fg: (0, 0, 0),
    bg: (0xff, 0xff, 0xff),
};

/// xterm's 16 colours, in ratatui's order (Black, Red, … Gray, DarkGray, LightRed, … White).
const ANSI: [(u8, u8, u8); 16] = [
    (0x00, 0x00, 0x00),
    (0xcd, 0x00, 0x00),
    (0x00, 0xcd, 0x00),
    (0xcd, 0xcd, 0x00),
    (0x00, 0x00, 0xee),
    (0xcd, 0x00, 0xcd),
    (0x00, 0xcd, 0xcd),
    (0xe5, 0xe5, 0xe5),
    (0x7f, 0x7f, 0x7f),
    (0xff, 0x00, 0x00),
    (0x00, 0xff, 0x00),
    (0xff, 0xff, 0x00),
    (0x5c, 0x5c, 0xff),
    (0xff, 0x00, 0xff),
    (0x00, 0xff, 0xff),
    (0xff, 0xff, 0xff),
];

/// A colour as RGB; `None` is the terminal's default (`reset`).
pub fn rgb(c: Color) -> Option<(u8, u8, u8)> {
    let i = match c {
        Color::Reset => return None,
        Color::Rgb(r, g, b) => return Some((r, g, b)),
        Color::Black => 0,
        Color::Red => 1,
        Color::Green => 2,
        Color::Yellow => 3,
        Color::Blue => 4,
        Color::Magenta => 5,
        Color::Cyan => 6,
        Color::Gray => 7,
        Color::DarkGray => 8,
        Color::LightRed => 9,
        Color::LightGreen => 10,
        Color::LightYellow => 11,
        Color::LightBlue => 12,
        Color::LightMagenta => 13,
        Color::LightCyan => 14,
        Color::White => 15,
        Color::Indexed(n) => n,
    };
    Some(match i {
        0..16 => ANSI[i as usize],
        16..232 => {
            let n = i - 16;
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            (level(n / 36), level(n / 6 % 6), level(n % 6))
        }
        _ => {
            let v = 8 + (i - 232) * 10;
            (v, v, v)
        }
    })
}

/// Relative luminance (WCAG 2).
pub fn luminance((r, g, b): (u8, u8, u8)) -> f64 {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.03928 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
}

/// The contrast ratio of two colours, 1 to 21.
pub fn ratio(a: (u8, u8, u8), b: (u8, u8, u8)) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// The terminal a theme is for: light when its text colour is dark.
pub fn terminal_for(theme: &Theme) -> Terminal {
    match theme.text.fg.and_then(rgb) {
        Some(c) if luminance(c) < 0.2 => LIGHT,
        _ => DARK,
    }
}

/// The colours `style` puts on screen over `under` (the background it is drawn on).
fn colours(style: Style, under: Option<Color>, t: Terminal) -> ((u8, u8, u8), (u8, u8, u8)) {
    let fg = style.fg.and_then(rgb).unwrap_or(t.fg);
    let bg = style.bg.or(under).and_then(rgb).unwrap_or(t.bg);
    if style.add_modifier.contains(Modifier::REVERSED) {
        (bg, fg)
    } else {
        (fg, bg)
    }
}

/// One pair that falls short: which, its ratio, what it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Shortfall {
    pub what: String,
    pub ratio: f64,
    pub needs: f64,
}

/// Every (foreground, background) pair the console draws with `theme`, checked.
pub fn check(theme: &Theme) -> Vec<Shortfall> {
    let t = terminal_for(theme);
    let on_text = theme.text.bg;
    let on_dialog = theme.dialog.bg.or(on_text);
    let on_bar = theme.status_bar.bg;
    let mut pairs: Vec<(String, Style, Option<Color>, f64)> = vec![
        ("text".into(), theme.text, None, TEXT),
        ("dim".into(), theme.dim, on_text, TEXT),
        ("title".into(), theme.title, on_text, TEXT),
        ("header".into(), theme.header, on_text, TEXT),
        ("selected".into(), theme.selected, on_text, TEXT),
        (
            "unfocused selection".into(),
            super::render::unfocused_selection_of(theme),
            on_text,
            TEXT,
        ),
        ("ok".into(), theme.ok, on_text, TEXT),
        ("failed".into(), theme.failed, on_text, TEXT),
        ("running".into(), theme.running, on_text, TEXT),
        ("skipped".into(), theme.skipped, on_text, TEXT),
        ("warning".into(), theme.warning, on_text, TEXT),
        ("stdout".into(), theme.stdout, on_text, TEXT),
        ("stderr".into(), theme.stderr, on_text, TEXT),
        ("search_match".into(), theme.search_match, on_text, TEXT),
        ("gauge".into(), theme.gauge, on_text, TEXT),
        ("dialog".into(), theme.dialog, on_text, TEXT),
        ("button".into(), theme.button, on_dialog, TEXT),
        (
            "button_focused".into(),
            theme.button_focused,
            on_dialog,
            TEXT,
        ),
        ("status_bar".into(), theme.status_bar, on_text, TEXT),
        ("status_error".into(), theme.status_error, on_bar, TEXT),
        ("border".into(), theme.border, on_text, NON_TEXT),
        (
            "border_focused".into(),
            theme.border_focused,
            on_text,
            NON_TEXT,
        ),
    ];
    // Dialogs draw titles, headers and states over the dialog's background.
    for (k, s) in [
        ("title", theme.title),
        ("dim", theme.dim),
        ("header", theme.header),
        ("ok", theme.ok),
        ("failed", theme.failed),
        ("warning", theme.warning),
    ] {
        if on_dialog != on_text {
            pairs.push((format!("{k} in a dialog"), s, on_dialog, TEXT));
        }
    }
    pairs
        .into_iter()
        .filter_map(|(what, style, under, needs)| {
            let (fg, bg) = colours(style, under, t);
            let r = ratio(fg, bg);
            (r < needs).then_some(Shortfall {
                what,
                ratio: (r * 100.0).round() / 100.0,
                needs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ratios() {
        assert!((ratio((0, 0, 0), (255, 255, 255)) - 21.0).abs() < 1e-9);
        assert!((ratio((0x77, 0x77, 0x77), (255, 255, 255)) - 4.48).abs() < 0.01);
        assert_eq!(rgb(Color::Indexed(196)), Some((255, 0, 0)));
        assert_eq!(rgb(Color::Indexed(244)), Some((128, 128, 128)));
    }

    /// Issue 15 item 10: every built-in theme and every file in themes/ is readable.
    #[test]
    fn every_theme_reaches_wcag_contrast() {
        let mut bad = Vec::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("themes");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        assert!(files.len() >= 4, "themes/ holds the shipped themes");
        for p in files {
            let theme = Theme::load(p.to_str().unwrap()).unwrap();
            for s in check(&theme) {
                bad.push(format!(
                    "{}: {} {:.2}:1 < {}:1",
                    p.display(),
                    s.what,
                    s.ratio,
                    s.needs
                ));
            }
        }
        for (name, _) in crate::ui::tui::theme::BUILTIN {
            let theme = Theme::load(name).unwrap();
            for s in check(&theme) {
                bad.push(format!(
                    "built-in {name}: {} {:.2}:1 < {}:1",
                    s.what, s.ratio, s.needs
                ));
            }
        }
        assert!(bad.is_empty(), "contrast too low:\n{}", bad.join("\n"));
    }
}
