//! The session picker: saved sessions (the same folder `quill chat` uses),
//! newest first.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table};
use ratatui::Frame;

use super::centered;
use crate::tui::app::Picker;

/// Widths of the columns before the last words: name, mode, tokens, date.
const WIDTHS: [u16; 4] = [20, 6, 10, 21];
/// The narrowest the last words column gets.
const MIN_TAIL: u16 = 10;

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
    // The last words get what the other columns and the borders leave;
    // cut on the left to fit, since the end is what is worth seeing.
    let fixed: u16 = WIDTHS.iter().sum::<u16>() + WIDTHS.len() as u16 + 2;
    let tail_width = r.width.saturating_sub(fixed).max(MIN_TAIL) as usize;
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
                // Saved text comes from the model: last_words cleans it
                // of control characters.
                Cell::from(super::last_words(&e.tail, tail_width)),
            ])
            .style(style)
        });
    let mut widths: Vec<Constraint> = WIDTHS.iter().map(|w| Constraint::Length(*w)).collect();
    widths.push(Constraint::Min(MIN_TAIL));
    let table = Table::new(rows, widths).block(block);
    frame.render_widget(table, r);
}
