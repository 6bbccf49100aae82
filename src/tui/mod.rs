//! `quill tui`: a full-screen terminal app for chatting and for writing
//! stories, on top of the same chat and writer libraries as `quill chat`
//! and `quill write`.
//!
//! The layout follows ratatui's demo2: [`app`] holds the state and turns
//! keys into changes and engine requests, [`ui`] draws it (one module per
//! screen), [`event`] gathers terminal events, and [`engine`] runs the
//! model on its own thread. Generation never blocks the UI: requests go to
//! the engine over a channel, text comes back over another, and Esc sets
//! an `AtomicBool` that the engine's token callback checks.

pub mod app;
pub mod engine;
pub mod event;
pub mod input;
pub mod protocol;
pub mod story;
pub mod ui;

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Once};

use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;

use app::App;
use event::AppEvent;
use protocol::Request;

/// Whether the app has the terminal (raw mode, alternate screen).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back: cooked mode, main screen, visible cursor. Does
/// nothing unless the app has the terminal, so calling it again (the panic
/// hook, then the guard) cannot leave the alternate screen twice, which
/// would move the cursor back over a panic message just printed.
pub fn restore_terminal() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

/// Owns the terminal while the app runs; dropping it restores the
/// terminal, so an early `?` return or an unwinding panic leave it usable.
pub struct TerminalGuard {
    /// The ratatui terminal on stdout.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    /// Raw mode, alternate screen, bracketed paste, and a panic hook that
    /// restores the terminal before the panic message is printed (else the
    /// message would land on the alternate screen and vanish, and the
    /// shell would be left in raw mode).
    pub fn enter() -> io::Result<TerminalGuard> {
        install_panic_hook();
        ACTIVE.store(true, Ordering::SeqCst);
        enable_raw_mode()?;
        let setup = execute!(io::stdout(), EnterAlternateScreen, EnableBracketedPaste)
            .and_then(|_| Terminal::new(CrosstermBackend::new(io::stdout())));
        match setup {
            Ok(mut terminal) => {
                terminal.clear()?;
                Ok(TerminalGuard { terminal })
            }
            Err(e) => {
                restore_terminal();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE.load(Ordering::SeqCst)
                && std::thread::current().name() == Some(engine::THREAD_NAME)
            {
                // The engine thread catches its panics and the app quits
                // with the message once the terminal is restored; restoring
                // here would let the UI draw once more on the main screen,
                // and printing here would be lost with the alternate one.
                engine::note_panic(info.to_string().replace('\n', " "));
                return;
            }
            restore_terminal();
            previous(info);
        }));
    });
}

/// The event loop: draw, wait for an event, apply it, pass the app's
/// requests to the engine; until the user quits. Between draws it applies
/// every event already waiting, so a fast stream of tokens costs one
/// redraw per batch rather than one per token.
pub fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    events: &Receiver<AppEvent>,
    engine: &Sender<Request>,
) -> anyhow::Result<()> {
    loop {
        terminal.draw(|f| ui::draw(f, app))?;
        let first = events
            .recv()
            .map_err(|_| anyhow::anyhow!("the event sources stopped"))?;
        let mut engine_gone = false;
        for ev in std::iter::once(first).chain(std::iter::from_fn(|| events.try_recv().ok())) {
            match ev {
                AppEvent::Key(k) => app.handle_key(k),
                AppEvent::Paste(s) => app.handle_paste(&s),
                AppEvent::Resize => {
                    // ratatui re-reads the size on the next draw; the
                    // full clear avoids leftovers from the old layout.
                    terminal.clear()?;
                }
                AppEvent::Tick => {}
                AppEvent::Engine(r) => app.handle_response(r),
                AppEvent::Terminate => app.quit = true,
            }
            for req in app.take_requests() {
                if engine.send(req).is_err() {
                    engine_gone = true;
                }
            }
            if app.quit {
                app.cancel.store(true, Ordering::SeqCst);
                let _ = engine.send(Request::Quit);
                return match app.fatal.take() {
                    Some(m) => Err(anyhow::anyhow!(m)),
                    None => Ok(()),
                };
            }
        }
        if engine_gone {
            anyhow::bail!("the engine thread stopped unexpectedly");
        }
    }
}

/// What `quill tui` runs with.
pub struct TuiOptions {
    /// The engine's configuration (model, persona, prompt file, folders).
    pub engine: engine::EngineConfig,
}

/// Runs the app on the real terminal until the user quits. The terminal
/// is restored before this returns, whether it returns an error or not.
pub fn run(options: TuiOptions) -> anyhow::Result<()> {
    // Before the engine thread starts, so a panic there restores too.
    install_panic_hook();
    let (tx, rx) = std::sync::mpsc::channel::<AppEvent>();
    let cancel = Arc::new(AtomicBool::new(false));
    let engine_tx = tx.clone();
    let (requests, engine_thread) = engine::spawn(options.engine, cancel.clone(), move |r| {
        let _ = engine_tx.send(AppEvent::Engine(r));
    })?;
    let mut guard = TerminalGuard::enter()?;
    let stop_reader = Arc::new(AtomicBool::new(false));
    let signalled = Arc::new(AtomicBool::new(false));
    // Without these, a `kill` would end the process with the terminal
    // still raw; with them the app quits as if asked and restores it.
    #[cfg(unix)]
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
    ] {
        signal_hook::flag::register(sig, signalled.clone())?;
    }
    let reader = event::spawn_terminal_reader(tx, stop_reader.clone(), signalled);
    let mut app = App::new(cancel);
    // Lets the tmux test check that a panic on the UI thread restores the
    // terminal and shows its message.
    if std::env::var("QUILL_TUI_TEST_PANIC").is_ok_and(|v| v == "ui") {
        panic!("QUILL_TUI_TEST_PANIC=ui: panicking on purpose");
    }
    let result = run_loop(&mut guard.terminal, &mut app, &rx, &requests);
    stop_reader.store(true, Ordering::SeqCst);
    // The reader notices `stop` within a tick, unless the terminal hung
    // up and crossterm's poll is looping on end-of-file (see
    // `event::spawn_terminal_reader`): then it is left behind, and ends
    // with the process.
    let deadline = std::time::Instant::now() + 3 * event::TICK;
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if reader.is_finished() {
        let _ = reader.join();
    }
    drop(guard);
    // Not joined: the engine stops at its next token (cancel is set) or
    // when it sees the channel closed, but a prefill in progress cannot be
    // interrupted, and quitting should not wait for it.
    drop(requests);
    drop(engine_thread);
    result
}
