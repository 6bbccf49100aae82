//! Where the event loop's events come from: a thread reading the terminal
//! and the engine thread, both sending into one channel, so the loop
//! sleeps in a single `recv` and wakes for whichever comes first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyEvent};

use super::protocol::Response;

/// One thing for the event loop to handle.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    /// A key press.
    Key(KeyEvent),
    /// Pasted text (bracketed paste: newlines in it do not send).
    Paste(String),
    /// The terminal changed size: redraw.
    Resize,
    /// Time passed (the spinner moves).
    Tick,
    /// The engine said something.
    Engine(Response),
    /// A signal asked the process to end (SIGTERM, SIGHUP, or SIGINT from
    /// outside: in raw mode Ctrl-C is a key, not a signal).
    Terminate,
}

/// How often the reader wakes to send a [`AppEvent::Tick`] and to check
/// whether it should stop.
pub const TICK: Duration = Duration::from_millis(200);

/// Reads terminal events on a thread until `stop` is set or the channel
/// closes. Polling with a timeout (rather than a blocking read) lets the
/// thread notice `stop`, so it never holds the terminal after the app
/// has restored it, and `signalled` (set by a signal handler), so the app
/// quits through its normal path, restoring the terminal.
pub fn spawn_terminal_reader(
    tx: Sender<AppEvent>,
    stop: Arc<AtomicBool>,
    signalled: Arc<AtomicBool>,
) -> JoinHandle<()> {
    // A terminal that hangs up (tmux killed, an SSH connection dropped)
    // reads as end-of-file, and crossterm's `poll` then loops on `read`
    // without returning: the reader below never gets back to its checks,
    // and the app stayed alive with a core busy. So a watchdog looks for
    // the hang-up (or the SIGHUP that comes with it) on its own thread.
    {
        let (tx, stop, signalled) = (tx.clone(), stop.clone(), signalled.clone());
        std::thread::Builder::new()
            .name("quill-tui-watch".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(TICK);
                    let gone = terminal_hung_up() || signalled.load(Ordering::SeqCst);
                    if gone && tx.send(AppEvent::Terminate).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the terminal watchdog");
    }
    std::thread::Builder::new()
        .name("quill-tui-input".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if signalled.swap(false, Ordering::SeqCst) && tx.send(AppEvent::Terminate).is_err()
                {
                    break;
                }
                let ev = match event::poll(TICK) {
                    Ok(true) => match event::read() {
                        Ok(Event::Key(k)) => AppEvent::Key(k),
                        Ok(Event::Paste(s)) => AppEvent::Paste(s),
                        Ok(Event::Resize(..)) => AppEvent::Resize,
                        Ok(_) => continue,
                        Err(_) => break,
                    },
                    Ok(false) => AppEvent::Tick,
                    Err(_) => break,
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
        })
        .expect("spawn the input thread")
}

/// Whether the terminal has hung up: `poll` on stdin reports `POLLHUP`
/// (Linux; elsewhere only the SIGHUP flag tells).
fn terminal_hung_up() -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut p = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd and a zero timeout: poll only fills in
        // `revents`.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & libc::POLLHUP != 0
    }
    #[cfg(not(target_os = "linux"))]
    false
}
