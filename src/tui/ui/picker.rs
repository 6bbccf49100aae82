//! The session picker: saved sessions (the same folder `quill chat` uses),
//! newest first.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table};
use ratatui::Frame;

use super::centered;
use crate::tui::app::Picker;

/// Draws the picker in the middle of `area`.
pub fn draw(frame: &mut Frame, p: &Picker, area: Rect) {
    let n = p.entries.as_ref().map_or(1, |e| e.len().max(1)) as u16;
    let r = centered(area, 110, n.min(area.height.saturating_sub(4)) + 2);
    frame.render_widget(Clear, r);
    let block = Block::bordered()
        .title(" Open a saved session ")
        .title_bottom(" ↑↓ choose · Enter load · Esc close ");
    let entries = match &p.entries {
        None => {
            frame.render_widget(Paragraph::new(" listing sessions…").block(block), r);
            return;
        }
        Some(e) if e.is_empty() => {
            frame.render_widget(
                Paragraph::new(" no saved sessions yet (Ctrl-S saves one)").block(block),
                r,
            );
            return;
        }
        Some(e) => e,
    };
    // Keep the selection in view in a long list.
    let height = r.height.saturating_sub(2) as usize;
    let first = (p.selected + 1).saturating_sub(height);
    let rows = entries
        .iter()
        .enumerate()
        .skip(first)
        .take(height)
        .map(|(i, e)| {
            let style = if i == p.selected {
                Style::new()
                    .fg(Color::Black)
                    .bg(Color::Cyan)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            Row::new(vec![
                Cell::from(e.name.clone()),
                Cell::from(e.mode.title()),
                Cell::from(format!("{} tok", e.tokens)),
                Cell::from(e.created.clone()),
                // Saved text comes from the model: no control characters.
                Cell::from(format!("…{}", super::clean(&e.tail))),
            ])
            .style(style)
        });
    let table = Table::new(
        rows,
        [
            Constraint::Length(20),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(21),
            Constraint::Min(10),
        ],
    )
    .block(block);
    frame.render_widget(table, r);
}
