//! The message line and the two-line status bar.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::tui::app::App;
use crate::tui::protocol::Status;

const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// What the engine is doing, and the last notice or error. A message
/// set while busy (starting work clears it) answers a key pressed
/// meanwhile, so it is shown after the busy line rather than hidden.
pub fn draw_message(frame: &mut Frame, app: &App, area: Rect) {
    let message = app.message.as_ref().map(|(is_err, m)| {
        let style = if *is_err {
            Style::new().fg(Color::Red)
        } else {
            Style::new().fg(Color::Gray)
        };
        Span::styled(format!(" {}", m.replace('\n', " ")), style)
    });
    let line = if let Some(b) = &app.busy {
        let secs = b.started.elapsed().as_secs_f64();
        let spin = SPINNER[(secs * 10.0) as usize % SPINNER.len()];
        let mut spans = vec![
            Span::styled(
                format!(" {spin} {}… ", b.what),
                Style::new().fg(Color::Yellow),
            ),
            Span::raw(format!("{:.1} s · Esc stops", secs)),
        ];
        if let Some(m) = message {
            spans.push(Span::raw(" ·"));
            spans.push(m);
        }
        Line::from(spans)
    } else if let Some(m) = message {
        Line::from(m)
    } else {
        Line::default()
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// Model, state and sampler of the current mode.
pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let lines = status_lines(app.status(app.mode));
    let style = Style::new().fg(Color::Black).bg(Color::Gray);
    frame.render_widget(
        Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>()).style(style),
        area,
    );
}

/// The status bar's two lines as text.
pub fn status_lines(s: &Status) -> [String; 2] {
    if s.model.is_empty() {
        return [" loading the model…".into(), String::new()];
    }
    let first = format!(
        " {} · {} · {} · {} threads │ {} tokens in state · state {} │ {}",
        s.model,
        s.version,
        s.dtype,
        s.threads,
        s.tokens_in_state,
        human_bytes(s.state_bytes),
        if s.tokens_per_s > 0.0 {
            format!("{:.1} tokens/s", s.tokens_per_s)
        } else {
            "– tokens/s".into()
        }
    );
    let second = match &s.settings {
        Some(st) => {
            let v = &st.sampler;
            format!(
                " temperature {} · top-p {} · top-k {} · min-p {} · presence {} · frequency {} · decay {} · max {} tokens",
                v.temperature, v.top_p, v.top_k, v.min_p, v.presence, v.frequency, v.penalty_decay, st.max_tokens
            )
        }
        None => String::new(),
    };
    [first, second]
}

/// Bytes as KiB / MiB / GiB with two decimals.
pub fn human_bytes(n: usize) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1 << 20) as f64 {
        format!("{:.2} MiB", n / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n / 1024.0)
    }
}
