//! The Chat screen: the conversation and the input box.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::{visible, wrap};
use crate::tui::app::{App, Speaker};
use crate::tui::input::TextInput;
use crate::tui::protocol::Mode;

/// Draws the conversation and the input box into `area`.
pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let input_h = app.chat.input.lines().len().clamp(1, 5) as u16 + 2;
    let [conv, input] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(input_h)]).areas(area);
    draw_conversation(frame, app, conv);
    draw_input(
        frame,
        &app.chat.input,
        input,
        " Message ",
        " Enter sends · Alt-Enter new line · Ctrl-R retry · Ctrl-E continue · Esc stops ",
        app.overlay.is_none(),
    );
}

fn draw_conversation(frame: &mut Frame, app: &App, area: Rect) {
    let block = Block::bordered().title(" Conversation ");
    let inner = block.inner(area);
    let width = inner.width.saturating_sub(2) as usize;
    let generating = app.busy.as_ref().is_some_and(|b| b.mode == Mode::Chat);
    let assistant = match app.chat_status.label.as_str() {
        "" => "Assistant".to_string(),
        l => capitalise(l),
    };
    let mut lines: Vec<Line> = Vec::new();
    let n = app.chat.entries.len();
    for (i, e) in app.chat.entries.iter().enumerate() {
        let (who, style) = match e.speaker {
            Speaker::User => ("You".to_string(), Style::new().fg(Color::Green)),
            Speaker::Assistant => (assistant.clone(), Style::new().fg(Color::Cyan)),
            Speaker::Note => ("Quill".to_string(), Style::new().fg(Color::DarkGray)),
        };
        lines.push(Line::from(Span::styled(
            who,
            style.add_modifier(Modifier::BOLD),
        )));
        let mut text = e.text.trim_start_matches(' ').to_string();
        if generating && i + 1 == n && e.speaker == Speaker::Assistant {
            // Shows where text is arriving, and that something is.
            text.push('▌');
        }
        let body_style = if e.speaker == Speaker::Note {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        };
        for l in wrap(&text, width) {
            lines.push(Line::from(Span::styled(format!("  {l}"), body_style)));
        }
        lines.push(Line::default());
    }
    if lines.is_empty() {
        lines.push(Line::from(Span::styled(
            "Type a message and press Enter.",
            Style::new().fg(Color::DarkGray),
        )));
    }
    app.chat.view.record(inner.height as usize, lines.len());
    let shown = visible(&lines, inner.height as usize, app.chat.scroll);
    frame.render_widget(Paragraph::new(shown).block(block), area);
}

/// Draws a bordered text field and, when `focused`, puts the terminal
/// cursor in it.
pub fn draw_input(
    frame: &mut Frame,
    input: &TextInput,
    area: Rect,
    title: &str,
    hint: &str,
    focused: bool,
) {
    let block = Block::bordered()
        .title(title.to_string())
        .title_bottom(Line::from(hint.to_string()).style(Style::new().fg(Color::DarkGray)));
    let inner = block.inner(area);
    let (line, col) = input.cursor_line_col();
    // Keep the cursor's line in view when the text is taller than the box.
    let top = (line + 1).saturating_sub(inner.height as usize);
    let text: Vec<Line> = input
        .lines()
        .iter()
        .skip(top)
        .map(|l| Line::from(l.to_string()))
        .collect();
    // Keep the cursor's column in view on long lines.
    let hscroll = (col + 1).saturating_sub(inner.width as usize);
    frame.render_widget(
        Paragraph::new(text)
            .scroll((0, hscroll as u16))
            .block(block),
        area,
    );
    if focused && inner.width > 0 && inner.height > 0 {
        frame.set_cursor_position((
            inner.x + (col - hscroll) as u16,
            inner.y + (line - top) as u16,
        ));
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
