//! The settings panel: sampler values and the length limit of the
//! current mode.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Cell, Clear, Row, Table};
use ratatui::Frame;

use ratatui::text::{Line, Span};

use super::{centered, selectable};
use crate::tui::app::{format_value, App, SettingsPanel, SETTINGS_ROWS};

/// Draws the panel in the middle of `area`.
pub fn draw(frame: &mut Frame, app: &App, p: &SettingsPanel, area: Rect) {
    let r = centered(area, 56, SETTINGS_ROWS.len() as u16 + 2);
    frame.render_widget(Clear, r);
    let rows = SETTINGS_ROWS
        .iter()
        .enumerate()
        .map(|(i, (key, label, _))| {
            let value = match (&p.editing, i == p.selected) {
                (Some(input), true) => Line::from(vec![selectable(input), Span::raw("▏")]),
                _ => Line::from(
                    app.setting_value(key)
                        .map(|v| format_value(key, v))
                        .unwrap_or_default(),
                ),
            };
            let style = if i == p.selected {
                Style::new()
                    .fg(Color::Black)
                    .bg(Color::Cyan)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            Row::new(vec![Cell::from(*label), Cell::from(value)]).style(style)
        });
    let hint = if p.editing.is_some() {
        " Enter applies · Ctrl-U clears · Esc cancels "
    } else {
        " ↑↓ choose · ←→ change · Enter type · Esc close "
    };
    let title = format!(" Settings ({}) ", app.mode.title());
    let table = Table::new(rows, [Constraint::Length(20), Constraint::Min(10)])
        .block(Block::bordered().title(title).title_bottom(hint));
    frame.render_widget(table, r);
}
