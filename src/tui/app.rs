//! The app state machine: everything the screen shows, and what each key
//! does to it. It never blocks and never touches the model — requests for
//! the engine pile up in an outbox that the event loop drains — so tests
//! drive it with key events and engine responses alone.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::input::TextInput;
use super::protocol::{Mode, Request, Response, SessionEntry, Status};

/// Every key, as the help overlay and the README list them:
/// (where it works, key, what it does).
pub const KEYS: &[(&str, &str, &str)] = &[
    (
        "anywhere",
        "? / F1",
        "show or hide this help (? only when the input box is empty)",
    ),
    ("anywhere", "Tab", "switch between Chat and Write"),
    ("anywhere", "Esc", "stop generating; close a panel"),
    ("anywhere", "Ctrl-C", "stop generating; quit when idle"),
    ("anywhere", "Ctrl-Q", "quit"),
    (
        "anywhere",
        "Ctrl-T / F2",
        "settings: temperature, top-p, top-k, min-p, penalties, max tokens",
    ),
    ("anywhere", "Ctrl-S", "save the session (asks for a name)"),
    ("anywhere", "Ctrl-O", "open a saved session (picker)"),
    (
        "anywhere",
        "Ctrl-B",
        "branch: save a copy under a new name and go on with it",
    ),
    (
        "anywhere",
        "PgUp / PgDn",
        "scroll the conversation or story by a page",
    ),
    (
        "editing",
        "Enter",
        "send the message / write the next chapter",
    ),
    ("editing", "Alt-Enter / Ctrl-J", "new line in the input box"),
    ("editing", "← → Home End", "move the cursor"),
    ("editing", "Backspace / Del", "delete a character"),
    (
        "editing",
        "Ctrl-U",
        "clear the input box (or the name or value being typed)",
    ),
    ("chat", "Ctrl-R", "retry: a new reply to the last message"),
    ("chat", "Ctrl-E", "continue the last reply"),
    ("chat", "Ctrl-Z", "undo the last exchange"),
    ("chat", "Ctrl-N", "new conversation"),
    (
        "write",
        "Enter",
        "write the next chapter, steered by the guidance",
    ),
    ("write", "Ctrl-E", "continue the current chapter"),
    ("write", "Ctrl-R", "retry: write the last chapter again"),
    ("write", "Ctrl-N", "start the story over"),
    ("settings", "↑ ↓", "choose a setting"),
    ("settings", "← →", "lower / raise it"),
    (
        "settings",
        "Enter",
        "type a value, replacing the shown one (Enter again applies it)",
    ),
    ("picker", "↑ ↓ Enter", "choose a session and load it"),
    (
        "save",
        "Ctrl-U",
        "clear the name (typing replaces the suggested one too)",
    ),
    (
        "save",
        "y / n",
        "another session has that name: y replaces it, n renames",
    ),
];

/// The settings panel's rows: (key for `SamplerSettings::set`, label, step).
pub const SETTINGS_ROWS: &[(&str, &str, f64)] = &[
    ("temperature", "Temperature", 0.1),
    ("top_p", "Top-p", 0.05),
    ("top_k", "Top-k", 1.0),
    ("min_p", "Min-p", 0.01),
    ("presence", "Presence penalty", 0.1),
    ("frequency", "Frequency penalty", 0.1),
    ("penalty_decay", "Penalty decay", 0.001),
    ("max_tokens", "Max tokens", 50.0),
];

/// Who said a chat line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The person at the keyboard.
    User,
    /// The model.
    Assistant,
    /// A note from Quill (loaded a session, …).
    Note,
}

/// One entry of the conversation pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatEntry {
    /// Who.
    pub speaker: Speaker,
    /// What.
    pub text: String,
}

/// What the last draw of a scrolled pane measured. The wrapped line count
/// depends on the terminal's width, which only the drawing knows; the
/// scroll keys need it to keep the offset in range, else scrolling past
/// the top piles up an offset that PgDn must first work off unseen.
#[derive(Debug, Default, Clone)]
pub struct Viewport {
    height: Cell<usize>,
    lines: Cell<usize>,
}

impl Viewport {
    /// Records the pane's height and its number of wrapped lines (called
    /// by the drawing, which only has `&App`: hence the cells).
    pub fn record(&self, height: usize, lines: usize) {
        self.height.set(height);
        self.lines.set(lines);
    }

    /// The largest useful offset: the first line at the top of the pane.
    pub fn max_scroll(&self) -> usize {
        self.lines.get().saturating_sub(self.height.get())
    }

    /// Lines PgUp / PgDn move: a page, less two lines kept for context
    /// (10 before the pane has been drawn).
    pub fn page(&self) -> usize {
        match self.height.get() {
            0 => 10,
            h => h.saturating_sub(2).max(1),
        }
    }

    /// The offset `scroll` moved `up` (or down) by a page, within range.
    pub fn paged(&self, scroll: usize, up: bool) -> usize {
        let scroll = scroll.min(self.max_scroll());
        if up {
            (scroll + self.page()).min(self.max_scroll())
        } else {
            scroll.saturating_sub(self.page())
        }
    }
}

/// The Chat screen's state.
#[derive(Debug, Default)]
pub struct ChatView {
    /// The conversation so far.
    pub entries: Vec<ChatEntry>,
    /// The message being typed.
    pub input: TextInput,
    /// Lines scrolled up from the bottom (0 follows new text).
    pub scroll: usize,
    /// The conversation pane as last drawn.
    pub view: Viewport,
}

/// The Write screen's state.
#[derive(Debug, Default)]
pub struct WriteView {
    /// The story's opening (premise, or text of a loaded session).
    pub intro: String,
    /// Chapters written in this run.
    pub chapters: Vec<String>,
    /// Guidance for the next chapter.
    pub guidance: TextInput,
    /// Lines scrolled up from the bottom.
    pub scroll: usize,
    /// The story pane as last drawn.
    pub view: Viewport,
}

impl WriteView {
    /// The whole story as shown.
    pub fn story(&self) -> String {
        let mut s = self.intro.clone();
        for c in &self.chapters {
            s.push_str(c);
        }
        s
    }
}

/// What the engine is doing, while it is doing it.
#[derive(Debug, Clone)]
pub struct Busy {
    /// For which mode.
    pub mode: Mode,
    /// What, in a few words.
    pub what: String,
    /// Pieces of text received.
    pub pieces: usize,
    /// Since when.
    pub started: Instant,
    /// When the first piece of text came and the state's token count
    /// then: the live tokens/s counts from there, so the prompt's prefill
    /// before the first token is not averaged into the generation's speed.
    pub first_text: Option<(Instant, u64)>,
}

/// The settings panel.
#[derive(Debug, Clone)]
pub struct SettingsPanel {
    /// Selected row of [`SETTINGS_ROWS`].
    pub selected: usize,
    /// A value being typed, if any.
    pub editing: Option<TextInput>,
}

/// Tokens per second between the first piece of a generation and a later
/// one, each `(when, tokens in state)`: `None` until a token has come and
/// a tenth of a second has passed (fewer make a jumpy figure).
pub fn live_rate(first: (Instant, u64), now: (Instant, u64)) -> Option<f64> {
    let secs = now.0.saturating_duration_since(first.0).as_secs_f64();
    let tokens = now.1.checked_sub(first.1)?;
    (tokens > 0 && secs >= 0.1).then(|| tokens as f64 / secs)
}

/// The session picker.
#[derive(Debug, Clone)]
pub struct Picker {
    /// The sessions (None while the engine is listing them).
    pub entries: Option<Vec<SessionEntry>>,
    /// Selected row.
    pub selected: usize,
}

/// What a name prompt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameFor {
    /// Ctrl-S.
    Save,
    /// Ctrl-B.
    Branch,
}

/// A panel drawn over the current screen; it takes the keys while open.
#[derive(Debug, Clone)]
pub enum Overlay {
    /// The key list.
    Help,
    /// Sampler settings.
    Settings(SettingsPanel),
    /// Saved sessions.
    Picker(Picker),
    /// Asks for a session name.
    Name(NameFor, TextInput),
    /// The name given holds another session: asks whether to replace it.
    Replace(Replace),
}

/// A save waiting for the user's word because its name holds another
/// session (one this mode did not load or save).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replace {
    /// Save or branch.
    pub what: NameFor,
    /// The mode whose session is saved.
    pub mode: Mode,
    /// The name asked for.
    pub name: String,
    /// The session there, in a few words (tokens, when saved).
    pub about: String,
}

/// The whole UI state.
pub struct App {
    /// The screen shown.
    pub mode: Mode,
    /// A panel over it, if any.
    pub overlay: Option<Overlay>,
    /// Chat screen.
    pub chat: ChatView,
    /// Write screen.
    pub write: WriteView,
    /// Status per mode, as the engine last reported it (its token count
    /// also moves with each piece of text).
    pub chat_status: Status,
    /// See `chat_status`.
    pub write_status: Status,
    /// What the engine is busy with (None: idle, keys may start work).
    pub busy: Option<Busy>,
    /// The message line: the last notice or error.
    pub message: Option<(bool, String)>,
    /// Set to stop the generation in progress; the engine checks it in its
    /// token callback and clears it before each request.
    pub cancel: Arc<AtomicBool>,
    /// Requests for the engine, drained by the event loop.
    pub outbox: Vec<Request>,
    /// Set when the user quits.
    pub quit: bool,
    /// Why the app must stop, when it is not the user's choice.
    pub fatal: Option<String>,
}

impl App {
    /// A fresh app, busy until the engine reports it has prepared the
    /// modes.
    pub fn new(cancel: Arc<AtomicBool>) -> Self {
        App {
            mode: Mode::Chat,
            overlay: None,
            chat: ChatView::default(),
            write: WriteView::default(),
            chat_status: Status::default(),
            write_status: Status::default(),
            busy: Some(Busy {
                mode: Mode::Chat,
                what: "preparing".into(),
                pieces: 0,
                started: Instant::now(),
                first_text: None,
            }),
            message: None,
            cancel,
            outbox: Vec::new(),
            quit: false,
            fatal: None,
        }
    }

    /// The status of a mode.
    pub fn status(&self, mode: Mode) -> &Status {
        match mode {
            Mode::Chat => &self.chat_status,
            Mode::Write => &self.write_status,
        }
    }

    fn status_mut(&mut self, mode: Mode) -> &mut Status {
        match mode {
            Mode::Chat => &mut self.chat_status,
            Mode::Write => &mut self.write_status,
        }
    }

    /// Takes the requests queued for the engine.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.outbox)
    }

    fn note(&mut self, text: impl Into<String>) {
        self.message = Some((false, text.into()));
    }

    fn error(&mut self, text: impl Into<String>) {
        self.message = Some((true, text.into()));
    }

    /// Sends a request that keeps the engine busy (a generation, a load).
    fn start(&mut self, mode: Mode, what: &str, req: Request) {
        self.busy = Some(Busy {
            mode,
            what: what.into(),
            pieces: 0,
            started: Instant::now(),
            first_text: None,
        });
        self.message = None;
        self.outbox.push(req);
    }

    /// Whether new work may start; says why not on the message line.
    fn idle_or_say(&mut self) -> bool {
        if let Some(b) = &self.busy {
            // Shown next to the busy line (see status::draw_message), so
            // a key refused in either mode is never silently dropped.
            let msg = if matches!(
                b.what.as_str(),
                "replying" | "writing" | "retrying" | "continuing"
            ) {
                format!("busy: generating in {} (Esc stops it)", b.mode.title())
            } else {
                format!("busy: {} (wait a moment)", b.what)
            };
            self.error(msg);
            return false;
        }
        true
    }

    /// Stops the generation in progress, if any.
    fn stop(&mut self) {
        if self.busy.is_some() {
            self.cancel.store(true, Ordering::SeqCst);
            self.note("stopping…");
        }
    }

    /// Handles one key press (releases and repeats of other kinds are
    /// ignored: Windows terminals report releases too).
    pub fn handle_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        // Keys that work everywhere, even over a panel.
        match key.code {
            KeyCode::Char('c') if ctrl => {
                if self.busy.is_some() {
                    self.stop();
                } else {
                    self.quit = true;
                }
                return;
            }
            KeyCode::Char('q') if ctrl => {
                self.stop();
                self.quit = true;
                return;
            }
            KeyCode::F(1) => {
                self.toggle_help();
                return;
            }
            _ => {}
        }
        match self.overlay.take() {
            Some(o) => self.overlay_key(o, key),
            None => self.screen_key(key),
        }
    }

    /// Pasted text goes into the field being edited; its newlines stay
    /// newlines instead of sending.
    pub fn handle_paste(&mut self, text: &str) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let field = match &mut self.overlay {
            None => Some(self.input_mut()),
            Some(Overlay::Name(_, input)) => Some(input),
            Some(Overlay::Settings(SettingsPanel {
                editing: Some(input),
                ..
            })) => Some(input),
            _ => None,
        };
        if let Some(f) = field {
            for c in text.chars() {
                f.insert(c);
            }
        }
    }

    fn toggle_help(&mut self) {
        self.overlay = match self.overlay {
            Some(Overlay::Help) => None,
            _ => Some(Overlay::Help),
        };
    }

    /// Keys with no panel open.
    fn screen_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let mode = self.mode;
        match key.code {
            KeyCode::Esc => self.stop(),
            KeyCode::Tab | KeyCode::BackTab => self.mode = self.mode.other(),
            KeyCode::F(2) => self.open_settings(),
            KeyCode::Char('t') if ctrl => self.open_settings(),
            KeyCode::Char('s') if ctrl => self.open_name(NameFor::Save),
            KeyCode::Char('b') if ctrl => self.open_name(NameFor::Branch),
            // The guards below say why a key does nothing (busy, nothing
            // to retry) on the message line; a Ctrl key that falls through
            // does nothing else.
            KeyCode::Char('o') if ctrl && self.idle_or_say() => {
                self.overlay = Some(Overlay::Picker(Picker {
                    entries: None,
                    selected: 0,
                }));
                self.outbox.push(Request::ListSessions);
            }
            KeyCode::Char('r') if ctrl && self.idle_or_say() && self.has_output(mode) => {
                match mode {
                    Mode::Chat => {
                        if let Some(last) = self.chat.entries.last_mut() {
                            last.text.clear();
                        }
                    }
                    Mode::Write => {
                        if let Some(last) = self.write.chapters.last_mut() {
                            last.clear();
                        }
                    }
                }
                self.start(mode, "retrying", Request::Retry(mode));
            }
            KeyCode::Char('e') if ctrl && self.idle_or_say() && self.has_output(mode) => {
                self.start(mode, "continuing", Request::Continue(mode));
            }
            KeyCode::Char('z') if ctrl && mode == Mode::Chat && self.idle_or_say() => {
                self.start(mode, "undoing", Request::Undo);
            }
            // Write keeps no undo history: point to what does go back.
            KeyCode::Char('z') if ctrl && mode == Mode::Write => self.error(
                "nothing to undo in Write: Ctrl-R writes the last chapter again, Ctrl-N starts the story over",
            ),
            KeyCode::Char('n') if ctrl && self.idle_or_say() => {
                self.start(mode, "starting over", Request::Reset(mode));
            }
            KeyCode::Char('u') if ctrl => {
                self.input_mut().take();
            }
            KeyCode::Char('j') if ctrl => self.input_mut().insert('\n'),
            KeyCode::Enter if alt => self.input_mut().insert('\n'),
            KeyCode::Enter => self.submit(),
            KeyCode::PageUp | KeyCode::PageDown => {
                let up = key.code == KeyCode::PageUp;
                let (scroll, view) = match self.mode {
                    Mode::Chat => (&mut self.chat.scroll, &self.chat.view),
                    Mode::Write => (&mut self.write.scroll, &self.write.view),
                };
                *scroll = view.paged(*scroll, up);
            }
            KeyCode::Char('?') if self.input().is_empty() => self.toggle_help(),
            KeyCode::Char(c) if !ctrl => self.input_mut().insert(c),
            KeyCode::Backspace => self.input_mut().backspace(),
            KeyCode::Delete => self.input_mut().delete(),
            KeyCode::Left => self.input_mut().left(),
            KeyCode::Right => self.input_mut().right(),
            KeyCode::Home => self.input_mut().home(),
            KeyCode::End => self.input_mut().end(),
            _ => {}
        }
    }

    /// Whether there is a reply / chapter for retry and continue to act on.
    fn has_output(&mut self, mode: Mode) -> bool {
        let has = match mode {
            Mode::Chat => self
                .chat
                .entries
                .last()
                .is_some_and(|e| e.speaker == Speaker::Assistant),
            Mode::Write => !self.write.chapters.is_empty(),
        };
        if !has {
            self.error(match mode {
                Mode::Chat => "no reply yet: send a message first",
                Mode::Write => {
                    "no chapter written in this run yet: press Enter to write the next one"
                }
            });
        }
        has
    }

    /// The focused text field of the current screen.
    pub fn input(&self) -> &TextInput {
        match self.mode {
            Mode::Chat => &self.chat.input,
            Mode::Write => &self.write.guidance,
        }
    }

    fn input_mut(&mut self) -> &mut TextInput {
        match self.mode {
            Mode::Chat => &mut self.chat.input,
            Mode::Write => &mut self.write.guidance,
        }
    }

    /// Enter: send the message, or write the next chapter.
    fn submit(&mut self) {
        if !self.idle_or_say() {
            return;
        }
        match self.mode {
            Mode::Chat => {
                if self.chat.input.text().trim().is_empty() {
                    return;
                }
                let text = self.chat.input.take();
                self.chat.entries.push(ChatEntry {
                    speaker: Speaker::User,
                    text: text.clone(),
                });
                self.chat.entries.push(ChatEntry {
                    speaker: Speaker::Assistant,
                    text: String::new(),
                });
                self.chat.scroll = 0;
                self.start(Mode::Chat, "replying", Request::Send(text));
            }
            Mode::Write => {
                let guidance = self.write.guidance.take();
                self.write.chapters.push(String::new());
                self.write.scroll = 0;
                self.start(Mode::Write, "writing", Request::WriteChapter(guidance));
            }
        }
    }

    fn open_settings(&mut self) {
        if self.status(self.mode).settings.is_none() {
            self.error("settings are not available until the model is ready");
            return;
        }
        self.overlay = Some(Overlay::Settings(SettingsPanel {
            selected: 0,
            editing: None,
        }));
    }

    fn open_name(&mut self, what: NameFor) {
        if !self.idle_or_say() {
            return;
        }
        let current = self.status(self.mode).session.clone().unwrap_or_default();
        let start = match what {
            NameFor::Save => current,
            NameFor::Branch if current.is_empty() => String::new(),
            NameFor::Branch => format!("{current}-branch"),
        };
        // Selected, so typing a new name replaces it (rather than append
        // to it, `story1story1`) while a cursor key keeps it to edit.
        self.overlay = Some(Overlay::Name(what, TextInput::with_selected_text(&start)));
    }

    /// Keys while a panel is open; `o` has been taken out of `self.overlay`
    /// and is put back unless the key closes it.
    fn overlay_key(&mut self, o: Overlay, key: KeyEvent) {
        let keep = match o {
            Overlay::Help => !matches!(
                key.code,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')
            ),
            Overlay::Settings(mut p) => {
                let keep = self.settings_key(&mut p, key);
                if keep {
                    self.overlay = Some(Overlay::Settings(p));
                }
                return;
            }
            Overlay::Picker(mut p) => {
                let keep = self.picker_key(&mut p, key);
                if keep {
                    self.overlay = Some(Overlay::Picker(p));
                }
                return;
            }
            Overlay::Name(what, mut input) => {
                match key.code {
                    KeyCode::Esc => {}
                    KeyCode::Enter => {
                        let name = input.text().trim().to_string();
                        if name.is_empty() {
                            self.error("give the session a name");
                            self.overlay = Some(Overlay::Name(what, input));
                        } else {
                            let mode = self.mode;
                            let req = match what {
                                NameFor::Save => Request::Save(mode, name),
                                NameFor::Branch => Request::Branch(mode, name),
                            };
                            self.start(mode, "saving", req);
                        }
                    }
                    _ => {
                        edit(&mut input, key);
                        self.overlay = Some(Overlay::Name(what, input));
                    }
                }
                return;
            }
            Overlay::Replace(r) => {
                match key.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => {
                        let req = Request::Replace {
                            mode: r.mode,
                            name: r.name.clone(),
                            branch: r.what == NameFor::Branch,
                        };
                        self.start(r.mode, "saving", req);
                    }
                    // Back to the name, to change it.
                    KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
                        self.message = None;
                        self.overlay = Some(Overlay::Name(r.what, TextInput::with_text(&r.name)));
                    }
                    // Only an explicit y loses the other session: a
                    // stray Enter must not.
                    _ => self.overlay = Some(Overlay::Replace(r)),
                }
                return;
            }
        };
        if keep {
            self.overlay = Some(o);
        }
    }

    /// Returns whether the panel stays open.
    fn settings_key(&mut self, p: &mut SettingsPanel, key: KeyEvent) -> bool {
        if let Some(input) = &mut p.editing {
            match key.code {
                KeyCode::Esc => p.editing = None,
                KeyCode::Enter => {
                    let value = input.text().trim().to_string();
                    p.editing = None;
                    self.apply_setting(SETTINGS_ROWS[p.selected].0, &value);
                }
                _ => edit(input, key),
            }
            return true;
        }
        match key.code {
            KeyCode::Esc | KeyCode::F(2) => return false,
            KeyCode::Char('t') if key.modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Up | KeyCode::Char('k') => p.selected = p.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                p.selected = (p.selected + 1).min(SETTINGS_ROWS.len() - 1)
            }
            KeyCode::Left | KeyCode::Char('-') | KeyCode::Right | KeyCode::Char('+') => {
                let up = matches!(key.code, KeyCode::Right | KeyCode::Char('+'));
                let (k, _, step) = SETTINGS_ROWS[p.selected];
                if let Some(v) = self.setting_value(k) {
                    let next = if up { v + step } else { v - step };
                    self.apply_setting(k, &format_value(k, next));
                }
            }
            KeyCode::Enter => {
                let k = SETTINGS_ROWS[p.selected].0;
                let v = self
                    .setting_value(k)
                    .map(|v| format_value(k, v))
                    .unwrap_or_default();
                p.editing = Some(TextInput::with_selected_text(&v));
            }
            _ => {}
        }
        true
    }

    /// The current value of a settings row, as a number.
    pub fn setting_value(&self, key: &str) -> Option<f64> {
        let s = self.status(self.mode).settings.as_ref()?;
        let v = &s.sampler;
        Some(match key {
            "temperature" => v.temperature as f64,
            "top_p" => v.top_p as f64,
            "top_k" => v.top_k as f64,
            "min_p" => v.min_p as f64,
            "presence" => v.presence as f64,
            "frequency" => v.frequency as f64,
            "penalty_decay" => v.penalty_decay as f64,
            "max_tokens" => s.max_tokens as f64,
            _ => return None,
        })
    }

    /// Sets one value through [`crate::sampler::SamplerSettings::set`] (so
    /// the panel accepts exactly what `/set` accepts) and sends the new
    /// settings to the engine; a rejected value changes nothing.
    pub fn apply_setting(&mut self, key: &str, value: &str) {
        let mode = self.mode;
        let Some(mut s) = self.status(mode).settings.clone() else {
            return;
        };
        let result = if key == "max_tokens" {
            match value.parse::<usize>() {
                Ok(n) if n >= 1 => {
                    s.max_tokens = n;
                    Ok(())
                }
                _ => Err(format!("max tokens: `{value}` is not a whole number ≥ 1")),
            }
        } else {
            s.sampler.set(key, value).map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                self.status_mut(mode).settings = Some(s.clone());
                self.outbox.push(Request::Settings {
                    mode,
                    settings: s,
                    length_set: key == "max_tokens",
                });
                self.note(format!("{key} = {value}"));
            }
            Err(e) => self.error(e),
        }
    }

    /// Returns whether the picker stays open.
    fn picker_key(&mut self, p: &mut Picker, key: KeyEvent) -> bool {
        let n = p.entries.as_ref().map_or(0, Vec::len);
        match key.code {
            KeyCode::Esc => return false,
            KeyCode::Up | KeyCode::Char('k') => p.selected = p.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                p.selected = (p.selected + 1).min(n.saturating_sub(1))
            }
            KeyCode::Enter => {
                if let Some(e) = p.entries.as_ref().and_then(|v| v.get(p.selected)) {
                    let (mode, name) = (e.mode, e.name.clone());
                    self.mode = mode;
                    self.start(mode, "loading", Request::Load(mode, name));
                    return false;
                }
            }
            _ => {}
        }
        true
    }

    /// Applies what the engine reports.
    pub fn handle_response(&mut self, r: Response) {
        match r {
            Response::Ready { mode, intro } | Response::WasReset { mode, intro } => match mode {
                Mode::Chat => {
                    self.chat.entries.clear();
                    if !intro.is_empty() {
                        self.chat.entries.push(ChatEntry {
                            speaker: Speaker::Note,
                            text: intro,
                        });
                    }
                }
                Mode::Write => {
                    self.write.intro = intro;
                    self.write.chapters.clear();
                }
            },
            Response::Status(mode, s) => *self.status_mut(mode) = s,
            Response::Text(mode, piece, tokens_in_state) => {
                let now = Instant::now();
                let mut rate = None;
                if let Some(b) = &mut self.busy {
                    b.pieces += 1;
                    match b.first_text {
                        None => b.first_text = Some((now, tokens_in_state)),
                        Some(first) => rate = live_rate(first, (now, tokens_in_state)),
                    }
                }
                let status = self.status_mut(mode);
                status.tokens_in_state = tokens_in_state;
                // The engine's exact figure replaces it when the
                // generation ends (its status after `Finished`).
                if let Some(r) = rate {
                    status.tokens_per_s = r;
                }
                match mode {
                    Mode::Chat => match self.chat.entries.last_mut() {
                        Some(e) if e.speaker == Speaker::Assistant => e.text.push_str(&piece),
                        _ => self.chat.entries.push(ChatEntry {
                            speaker: Speaker::Assistant,
                            text: piece,
                        }),
                    },
                    Mode::Write => match self.write.chapters.last_mut() {
                        Some(c) => c.push_str(&piece),
                        None => self.write.chapters.push(piece),
                    },
                }
            }
            Response::Finished {
                tokens,
                tokens_per_s,
                stop,
                ..
            } => self.note(format!(
                "{tokens} tokens, {tokens_per_s:.1} tokens/s ({stop})"
            )),
            Response::Notice(m) => self.note(m),
            Response::NameTaken {
                mode,
                name,
                branch,
                about,
            } => {
                // The question is about that mode's session: show it.
                self.mode = mode;
                self.error(format!(
                    "session `{name}` already exists ({about}): y replaces it, n picks another name"
                ));
                self.overlay = Some(Overlay::Replace(Replace {
                    what: if branch {
                        NameFor::Branch
                    } else {
                        NameFor::Save
                    },
                    mode,
                    name,
                    about,
                }));
            }
            Response::Error(m) => self.error(m),
            Response::Sessions(list) => {
                if let Some(Overlay::Picker(p)) = &mut self.overlay {
                    p.selected = 0;
                    p.entries = Some(list);
                }
            }
            Response::Loaded { mode, text, .. } => match mode {
                Mode::Chat => {
                    // A chat snapshot keeps the state, not the transcript:
                    // show what the load reported (it ends with the last
                    // words of the conversation).
                    self.chat.entries = vec![ChatEntry {
                        speaker: Speaker::Note,
                        text,
                    }];
                    self.chat.scroll = 0;
                }
                Mode::Write => {
                    self.write.intro = text;
                    self.write.chapters.clear();
                    self.write.scroll = 0;
                }
            },
            Response::Undone => {
                // Drop back to (and including) the last user message.
                if let Some(i) = self
                    .chat
                    .entries
                    .iter()
                    .rposition(|e| e.speaker == Speaker::User)
                {
                    self.chat.entries.truncate(i);
                }
            }
            Response::Fatal(m) => {
                self.fatal = Some(m);
                self.quit = true;
            }
            Response::Idle => {
                self.busy = None;
                self.cancel.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// Applies an editing key to a one-line field (name prompts, values).
fn edit(input: &mut TextInput, key: KeyEvent) {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        // As in the message box.
        KeyCode::Char('u') if ctrl => input.clear(),
        KeyCode::Char(c) if !ctrl => input.insert(c),
        KeyCode::Backspace => input.backspace(),
        KeyCode::Delete => input.delete(),
        KeyCode::Left => input.left(),
        KeyCode::Right => input.right(),
        KeyCode::Home => input.home(),
        KeyCode::End => input.end(),
        _ => {}
    }
}

/// A settings value as text: whole numbers for counts, a few decimals
/// (no float noise like 0.30000001) for the rest.
pub fn format_value(key: &str, v: f64) -> String {
    if matches!(key, "top_k" | "max_tokens") {
        return format!("{}", v.max(0.0).round() as u64);
    }
    let s = format!("{:.3}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}
