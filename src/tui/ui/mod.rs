//! Drawing: one module per screen and panel, all pure functions of the
//! [`App`] state, so TestBackend tests can check exactly what is shown.

mod chat;
mod help;
mod picker;
mod settings;
mod status;
mod write;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::app::{App, NameFor, Overlay, Replace};
use super::protocol::Mode;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [tabs, body, message, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(2),
    ])
    .areas(frame.area());
    draw_tabs(frame, app, tabs);
    match app.mode {
        Mode::Chat => chat::draw(frame, app, body),
        Mode::Write => write::draw(frame, app, body),
    }
    status::draw_message(frame, app, message);
    status::draw(frame, app, status);
    match &app.overlay {
        None => {}
        Some(Overlay::Help) => help::draw(frame, frame.area()),
        Some(Overlay::Settings(p)) => settings::draw(frame, app, p, frame.area()),
        Some(Overlay::Picker(p)) => picker::draw(frame, p, frame.area()),
        Some(Overlay::Name(what, input)) => draw_name(frame, *what, input, frame.area()),
        Some(Overlay::Replace(r)) => draw_replace(frame, r, frame.area()),
    }
}

fn draw_tabs(frame: &mut Frame, app: &App, area: Rect) {
    let mut spans = vec![Span::styled(
        " Quill ",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for mode in [Mode::Chat, Mode::Write] {
        let style = if mode == app.mode {
            Style::new().fg(Color::Black).bg(Color::Cyan)
        } else {
            Style::new()
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!(" {} ", mode.title()), style));
    }
    let st = app.status(app.mode);
    let what = match app.mode {
        Mode::Chat => "persona",
        Mode::Write => "story",
    };
    if !st.label.is_empty() {
        spans.push(Span::raw(format!("   {what}: {}", st.label)));
    }
    if let Some(s) = &st.session {
        spans.push(Span::raw(format!("   session: {s}")));
    }
    spans.push(Span::styled(
        "   Tab switches · ? help",
        Style::new().fg(Color::DarkGray),
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_name(frame: &mut Frame, what: NameFor, input: &super::input::TextInput, area: Rect) {
    let title = match what {
        NameFor::Save => " Save session as ",
        NameFor::Branch => " Branch: save a copy as (and go on with it) ",
    };
    let r = centered(area, 60, 3);
    frame.render_widget(Clear, r);
    let block = ratatui::widgets::Block::bordered()
        .title(title)
        .title_bottom(" Enter saves · Ctrl-U clears · Esc cancels ");
    let inner = block.inner(r);
    frame.render_widget(Paragraph::new(selectable(input)).block(block), r);
    let (_, col) = input.cursor_line_col();
    frame.set_cursor_position((inner.x + col as u16, inner.y));
}

fn draw_replace(frame: &mut Frame, r: &Replace, area: Rect) {
    let r_area = centered(area, 64, 4);
    frame.render_widget(Clear, r_area);
    let block = ratatui::widgets::Block::bordered()
        .title(format!(" Replace session `{}`? ", r.name))
        .title_bottom(" y replaces it · n / Esc: another name ");
    let text = vec![
        Line::from(format!("`{}` holds another session: {}.", r.name, r.about)),
        Line::from("Replacing it loses that session."),
    ];
    frame.render_widget(
        Paragraph::new(text)
            .wrap(ratatui::widgets::Wrap { trim: true })
            .block(block),
        r_area,
    );
}

/// A one-line field's text, shown reversed while it is selected so the
/// user can see that typing will replace it.
pub fn selectable(input: &super::input::TextInput) -> Span<'static> {
    let text = clean(input.text());
    if input.is_selected() {
        Span::styled(text, Style::new().add_modifier(Modifier::REVERSED))
    } else {
        Span::raw(text)
    }
}

/// A rectangle of at most `w` × `h` in the middle of `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// Word-wraps text to `width` display columns: paragraphs split at `\n`,
/// lines broken at spaces, words longer than a line broken anywhere. Done
/// here rather than by `Paragraph::wrap` because scrolling to the bottom
/// needs the number of wrapped lines before drawing.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in clean(text).split('\n') {
        let mut line = String::new();
        let mut line_w = 0;
        for word in split_keep_spaces(para) {
            let ww: usize = word.chars().map(|c| c.width().unwrap_or(0)).sum();
            if line_w + ww <= width {
                line.push_str(word);
                line_w += ww;
                continue;
            }
            if word.trim().is_empty() {
                // A space at the break: drop it rather than start a line with it.
                out.push(std::mem::take(&mut line));
                line_w = 0;
                continue;
            }
            if line_w > 0 && ww <= width {
                out.push(std::mem::take(&mut line));
                line.push_str(word);
                line_w = ww;
                continue;
            }
            for c in word.chars() {
                let cw = c.width().unwrap_or(0);
                if line_w + cw > width && line_w > 0 {
                    out.push(std::mem::take(&mut line));
                    line_w = 0;
                }
                line.push(c);
                line_w += cw;
            }
        }
        out.push(line);
    }
    out
}

/// Makes model output safe to draw: a control character (an escape, a
/// carriage return, a backspace…) written to the terminal would move the
/// cursor or restyle the screen, so each becomes U+FFFD, as undecodable
/// bytes already do; tabs become a space.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '\n',
            '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Splits into runs of spaces and runs of other characters.
fn split_keep_spaces(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_space = None;
    for (i, c) in s.char_indices() {
        let sp = c == ' ';
        if prev_space.is_some_and(|p| p != sp) {
            out.push(&s[start..i]);
            start = i;
        }
        prev_space = Some(sp);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// The end of `text` in at most `width` display columns, after a `…`
/// that says something came before: for the last words of a session,
/// where the end is what matters. Cut between grapheme clusters, so an
/// accent or a skin tone is not parted from its letter.
pub fn last_words(text: &str, width: usize) -> String {
    let text = clean(text);
    let mut kept = 0;
    let mut used = 1; // the `…`
    for g in text.graphemes(true).rev() {
        let w = g.width();
        if used + w > width {
            break;
        }
        used += w;
        kept += g.len();
    }
    if width == 0 {
        return String::new();
    }
    format!("…{}", &text[text.len() - kept..])
}

/// The window of `lines` that fits `height`, `scroll` lines up from the
/// bottom (clamped so the top line stays reachable but not passed).
pub fn visible<T: Clone>(lines: &[T], height: usize, scroll: usize) -> Vec<T> {
    let max_scroll = lines.len().saturating_sub(height);
    let scroll = scroll.min(max_scroll);
    let end = lines.len() - scroll;
    let start = end.saturating_sub(height);
    lines[start..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::{last_words, visible, wrap};

    #[test]
    fn last_words_keep_the_end_in_display_columns() {
        assert_eq!(last_words("the lamp went dark", 40), "…the lamp went dark");
        assert_eq!(last_words("the lamp went dark", 6), "… dark");
        // Wide characters count two columns; a cluster is kept whole.
        assert_eq!(last_words("灯台の光が消えた", 7), "…消えた");
        assert_eq!(last_words("ab👍🏽", 3), "…👍🏽");
        assert_eq!(last_words("cafe\u{301}", 3), "…fe\u{301}");
        assert_eq!(last_words("x\u{1b}y", 9), "…x\u{FFFD}y");
        assert_eq!(last_words("abc", 1), "…");
        assert_eq!(last_words("abc", 0), "");
    }

    #[test]
    fn wrap_breaks_at_spaces_and_splits_long_words() {
        assert_eq!(wrap("hello world", 5), vec!["hello", "world"]);
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("abcdefgh", 3), vec!["abc", "def", "gh"]);
        assert_eq!(wrap("x\n\ny", 10), vec!["x", "", "y"]);
        assert_eq!(wrap("", 10), vec![""]);
        assert_eq!(wrap("日本語", 4), vec!["日本", "語"]);
        assert_eq!(
            wrap("a\x1b[2Jb\rc\td", 20),
            vec!["a\u{FFFD}[2Jb\u{FFFD}c d"]
        );
    }

    #[test]
    fn visible_window_scrolls_from_the_bottom() {
        let v: Vec<u32> = (0..10).collect();
        assert_eq!(visible(&v, 3, 0), vec![7, 8, 9]);
        assert_eq!(visible(&v, 3, 2), vec![5, 6, 7]);
        assert_eq!(visible(&v, 3, 100), vec![0, 1, 2]);
        assert_eq!(visible(&v, 20, 0), v);
    }
}
