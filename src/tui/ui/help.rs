//! The help overlay: every key from [`KEYS`], grouped by where it works.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Cell, Clear, Row, Table};
use ratatui::Frame;

use super::centered;
use crate::tui::app::KEYS;

/// Draws the key table in the middle of `area`.
pub fn draw(frame: &mut Frame, area: Rect) {
    let h = KEYS.len() as u16 + 2;
    let r = centered(area, 100, h);
    frame.render_widget(Clear, r);
    let rows = KEYS.iter().enumerate().map(|(i, (place, key, what))| {
        // Name the group only on its first row, so groups read as blocks.
        let group = if i == 0 || KEYS[i - 1].0 != *place {
            *place
        } else {
            ""
        };
        Row::new(vec![
            Cell::from(group).style(Style::new().fg(Color::DarkGray)),
            Cell::from(*key).style(Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)),
            Cell::from(*what),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(9),
            Constraint::Length(19),
            Constraint::Min(10),
        ],
    )
    .block(
        Block::bordered()
            .title(" Keys ")
            .title_bottom(" ? or Esc closes "),
    );
    frame.render_widget(table, r);
}
