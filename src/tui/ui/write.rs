//! The Write screen: the story so far, the guidance box and the actions.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::chat::draw_input;
use super::{visible, wrap};
use crate::tui::app::App;
use crate::tui::protocol::Mode;

/// Draws the story, the guidance box and the action row into `area`.
pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let guide_h = app.write.guidance.lines().len().clamp(1, 4) as u16 + 2;
    let [story, guidance, actions] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(guide_h),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_story(frame, app, story);
    draw_input(
        frame,
        &app.write.guidance,
        guidance,
        " Guidance for the next chapter (optional) ",
        " Alt-Enter new line ",
        app.overlay.is_none(),
    );
    let key = Style::new().fg(Color::Black).bg(Color::Cyan);
    let row = Line::from(vec![
        Span::styled(" Enter ", key),
        Span::raw(" Write next chapter   "),
        Span::styled(" Ctrl-E ", key),
        Span::raw(" Continue   "),
        Span::styled(" Ctrl-R ", key),
        Span::raw(" Retry   "),
        Span::styled(" Ctrl-N ", key),
        Span::raw(" Start over"),
    ]);
    frame.render_widget(Paragraph::new(row), actions);
}

fn draw_story(frame: &mut Frame, app: &App, area: Rect) {
    let title = match app.write_status.label.as_str() {
        "" => " Story ".to_string(),
        l => format!(" Story — {l} "),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    let width = inner.width.saturating_sub(1) as usize;
    let mut text = app.write.story();
    if app.busy.as_ref().is_some_and(|b| b.mode == Mode::Write) {
        text.push('▌');
    }
    let mut lines: Vec<Line> = wrap(&text, width)
        .into_iter()
        .map(|l| {
            // Chapter headings stand out so the story's shape is visible.
            if l.trim_start().starts_with("Chapter ") || l.starts_with('#') {
                Line::from(Span::styled(l, Style::new().add_modifier(Modifier::BOLD)))
            } else {
                Line::from(l)
            }
        })
        .collect();
    if text.is_empty() {
        lines = vec![Line::from(Span::styled(
            "Press Enter to write the first chapter.",
            Style::new().fg(Color::DarkGray),
        ))];
    }
    app.write.view.record(inner.height as usize, lines.len());
    let shown = visible(&lines, inner.height as usize, app.write.scroll);
    frame.render_widget(Paragraph::new(shown).block(block), area);
}
