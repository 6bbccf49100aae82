//! `quill tui` without a terminal: each screen drawn on ratatui's
//! TestBackend and checked cell by cell, and the app state machine driven
//! by key events and engine responses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use quill::sampler::SamplerSettings;
use quill::tui::app::{App, NameFor, Overlay, Replace, Speaker, KEYS, SETTINGS_ROWS};
use quill::tui::protocol::{Mode, Request, Response, SessionEntry, Settings, Status};
use quill::tui::ui;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

fn status(label: &str) -> Status {
    Status {
        model: "rand-v7.safetensors".into(),
        version: "RWKV-7".into(),
        dtype: "f32".into(),
        threads: 2,
        tokens_in_state: 1234,
        state_bytes: 3 << 20,
        tokens_per_s: 42.5,
        settings: Some(Settings {
            sampler: SamplerSettings::default(),
            max_tokens: 500,
        }),
        label: label.into(),
        session: None,
    }
}

/// An app as it is once the engine has prepared both modes.
fn ready_app() -> App {
    let mut app = App::new(Arc::new(AtomicBool::new(false)));
    app.handle_response(Response::Status(Mode::Chat, status("assistant")));
    app.handle_response(Response::Status(Mode::Write, status("The Lighthouse")));
    app.handle_response(Response::Ready {
        mode: Mode::Chat,
        intro: String::new(),
    });
    app.handle_response(Response::Ready {
        mode: Mode::Write,
        intro: "The keeper had not seen a ship in forty years.".into(),
    });
    app.handle_response(Response::Idle);
    app
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
}

/// Draws the app at 120×40 and returns the screen as lines of text.
fn render(app: &App) -> Vec<String> {
    render_at(app, 120, 40)
}

fn render_at(app: &App, w: u16, h: u16) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| ui::draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect()
}

fn screen_has(screen: &[String], needle: &str) -> bool {
    screen.iter().any(|l| l.contains(needle))
}

#[track_caller]
fn assert_shows(screen: &[String], needle: &str) {
    assert!(
        screen_has(screen, needle),
        "screen should show `{needle}`:\n{}",
        screen.join("\n")
    );
}

#[test]
fn chat_screen_shows_conversation_input_and_status_bar() {
    let mut app = ready_app();
    type_text(&mut app, "Hello there");
    app.handle_key(key(KeyCode::Enter));
    app.handle_response(Response::Text(Mode::Chat, " General".into(), 1240));
    app.handle_response(Response::Text(Mode::Chat, " Kenobi!".into(), 1241));
    type_text(&mut app, "draft");
    let s = render(&app);
    assert_shows(&s, "[ Chat ]".replace(['[', ']'], "").as_str());
    assert_shows(&s, "Conversation");
    assert_shows(&s, "You");
    assert_shows(&s, "  Hello there");
    assert_shows(&s, "Assistant");
    assert_shows(&s, "  General Kenobi!▌");
    assert_shows(&s, "Message");
    assert_shows(&s, "│draft");
    assert_shows(&s, "persona: assistant");
    // The status bar: model, version, dtype, threads, tokens, state, speed, sampler.
    assert_shows(&s, "rand-v7.safetensors · RWKV-7 · f32 · 2 threads");
    assert_shows(&s, "1241 tokens in state · state 3.00 MiB");
    assert_shows(&s, "42.5 tokens/s");
    assert_shows(
        &s,
        "temperature 1 · top-p 0.85 · top-k 0 · min-p 0 · presence 0.5 · frequency 0.5 · decay 0.996 · max 500 tokens",
    );
    // Busy: the message line says so.
    assert_shows(&s, "replying…");
    assert_shows(&s, "Esc stops");
}

#[test]
fn long_replies_wrap_and_follow_the_bottom() {
    let mut app = ready_app();
    type_text(&mut app, "count");
    app.handle_key(key(KeyCode::Enter));
    let words: Vec<String> = (0..1500).map(|i| format!("w{i}")).collect();
    app.handle_response(Response::Text(Mode::Chat, words.join(" "), 3000));
    app.handle_response(Response::Idle);
    let s = render(&app);
    // The newest text is visible, the oldest has scrolled away.
    assert_shows(&s, "w1499");
    assert!(!screen_has(&s, " w0 "));
    assert!(s.iter().all(|l| l.chars().count() == 120));
    // PageUp scrolls back.
    for _ in 0..10 {
        app.handle_key(key(KeyCode::PageUp));
    }
    let s = render(&app);
    assert_shows(&s, "count");
    assert!(!screen_has(&s, "w1499"));
}

/// The numbers of the `Lnnn|` lines on screen, first and last.
fn numbered_span(screen: &[String]) -> (usize, usize) {
    let ns: Vec<usize> = screen
        .iter()
        .filter_map(|l| {
            let i = l.find('L')?;
            l[i + 1..].split('|').next()?.parse().ok()
        })
        .collect();
    (*ns.iter().min().unwrap(), *ns.iter().max().unwrap())
}

/// QA's case: 10 PgUp past the top, then PgDn, left the view at the top
/// until the 11th PgDn; and a page was 10 lines in a 30-line view. Both
/// panes now stop at the top and move a page less two lines.
#[test]
fn page_keys_move_a_page_and_stop_at_the_top() {
    let story: Vec<String> = (0..200).map(|i| format!("L{i:03}|")).collect();
    // (mode, pane height, lines above L000: the chat's "Quill" header)
    for (mode, height, above) in [(Mode::Write, 30, 0), (Mode::Chat, 31, 1)] {
        let mut app = ready_app();
        app.handle_response(Response::Ready {
            mode,
            intro: story.join("\n"),
        });
        app.mode = mode;
        let page = height - 2;
        let (first, last) = numbered_span(&render(&app));
        assert_eq!(last, 199, "{mode:?}");
        app.handle_key(key(KeyCode::PageUp));
        assert_eq!(numbered_span(&render(&app)).0, first - page, "{mode:?}");
        for _ in 0..30 {
            app.handle_key(key(KeyCode::PageUp));
        }
        assert_eq!(numbered_span(&render(&app)).0, 0, "{mode:?}");
        app.handle_key(key(KeyCode::PageDown));
        assert_eq!(numbered_span(&render(&app)).0, page - above, "{mode:?}");
        for _ in 0..30 {
            app.handle_key(key(KeyCode::PageDown));
        }
        assert_eq!(numbered_span(&render(&app)).1, 199, "{mode:?}");
        assert_eq!(
            if mode == Mode::Chat {
                app.chat.scroll
            } else {
                app.write.scroll
            },
            0
        );
    }
}

#[test]
fn write_screen_shows_story_guidance_and_actions() {
    let mut app = ready_app();
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.mode, Mode::Write);
    type_text(&mut app, "a storm arrives");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::WriteChapter("a storm arrives".into())]
    );
    app.handle_response(Response::Text(
        Mode::Write,
        "\n\nChapter 1\n\nThe wind rose at dusk.".into(),
        1250,
    ));
    let s = render(&app);
    assert_shows(&s, "Story — The Lighthouse");
    assert_shows(&s, "The keeper had not seen a ship in forty years.");
    assert_shows(&s, "Chapter 1");
    assert_shows(&s, "The wind rose at dusk.▌");
    assert_shows(&s, "Guidance for the next chapter");
    assert_shows(&s, "Write next chapter");
    assert_shows(&s, "Continue");
    assert_shows(&s, "Retry");
    assert_shows(&s, "story: The Lighthouse");
    assert_shows(&s, "writing…");
}

#[test]
fn status_bar_says_loading_before_the_engine_reports() {
    let app = App::new(Arc::new(AtomicBool::new(false)));
    let s = render(&app);
    assert_shows(&s, "loading the model…");
    assert_shows(&s, "preparing…");
}

#[test]
fn help_overlay_lists_every_key() {
    let mut app = ready_app();
    app.handle_key(key(KeyCode::Char('?')));
    assert!(matches!(app.overlay, Some(Overlay::Help)));
    let s = render(&app);
    assert_shows(&s, "Keys");
    for (_, k, what) in KEYS {
        assert_shows(&s, k);
        assert_shows(&s, what);
    }
    app.handle_key(key(KeyCode::Char('?')));
    assert!(app.overlay.is_none());
    assert!(!screen_has(&render(&app), "? or Esc closes"));
    // F1 toggles it too; Esc closes it.
    app.handle_key(key(KeyCode::F(1)));
    assert!(matches!(app.overlay, Some(Overlay::Help)));
    app.handle_key(key(KeyCode::Esc));
    assert!(app.overlay.is_none());
}

#[test]
fn question_mark_is_text_once_typing() {
    let mut app = ready_app();
    type_text(&mut app, "why?");
    assert!(app.overlay.is_none());
    assert_eq!(app.chat.input.text(), "why?");
}

#[test]
fn settings_panel_edits_sampler_settings() {
    let mut app = ready_app();
    app.handle_key(ctrl('t'));
    let s = render(&app);
    assert_shows(&s, "Settings (Chat)");
    assert_shows(&s, "Temperature");
    assert_shows(&s, "Top-p");
    assert_shows(&s, "Top-k");
    assert_shows(&s, "Presence penalty");
    assert_shows(&s, "Frequency penalty");
    assert_shows(&s, "Penalty decay");
    assert_shows(&s, "Max tokens");
    // Right raises the temperature by 0.1.
    app.handle_key(key(KeyCode::Right));
    let st = app.chat_status.settings.clone().unwrap();
    assert!((st.sampler.temperature - 1.1).abs() < 1e-6);
    assert_eq!(
        app.take_requests(),
        vec![Request::Settings {
            mode: Mode::Chat,
            settings: st.clone(),
            length_set: false
        }]
    );
    // Down to top-p, Enter, type a value, Enter applies it.
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Enter));
    app.handle_key(ctrl('u'));
    for _ in 0..5 {
        app.handle_key(key(KeyCode::Backspace));
    }
    type_text(&mut app, "0.5");
    assert_shows(&render(&app), "0.5▏");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.chat_status.settings.as_ref().unwrap().sampler.top_p,
        0.5
    );
    // Out of range: refused, nothing changes, the error is shown.
    app.handle_key(key(KeyCode::Enter));
    for _ in 0..5 {
        app.handle_key(key(KeyCode::Backspace));
    }
    type_text(&mut app, "7");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.chat_status.settings.as_ref().unwrap().sampler.top_p,
        0.5
    );
    assert!(app.message.as_ref().unwrap().0, "an error is shown");
    // top-k, min-p, penalties and max tokens.
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Right));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Left));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Left));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Left));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Right));
    let st = app.chat_status.settings.clone().unwrap();
    assert_eq!(st.sampler.top_k, 1);
    assert!((st.sampler.presence - 0.4).abs() < 1e-6);
    assert!((st.sampler.frequency - 0.4).abs() < 1e-6);
    assert!((st.sampler.penalty_decay - 0.995).abs() < 1e-6);
    assert_eq!(st.max_tokens, 550);
    let last = app.take_requests().pop().unwrap();
    assert_eq!(
        last,
        Request::Settings {
            mode: Mode::Chat,
            settings: st,
            length_set: true
        }
    );
    assert_shows(&render(&app), "550");
    app.handle_key(key(KeyCode::Esc));
    assert!(app.overlay.is_none());
    // The Write mode has settings of its own.
    assert_eq!(
        app.write_status.settings.as_ref().unwrap().sampler,
        SamplerSettings::default()
    );
}

#[test]
fn session_picker_lists_sessions_and_loads_one() {
    let mut app = ready_app();
    app.handle_key(ctrl('o'));
    assert_eq!(app.take_requests(), vec![Request::ListSessions]);
    assert_shows(&render(&app), "listing sessions…");
    let entry = |name: &str, mode, tail: &str| SessionEntry {
        name: name.into(),
        tokens: 321,
        created: "2026-11-26T20:00:00Z".into(),
        tail: tail.into(),
        mode,
    };
    app.handle_response(Response::Sessions(vec![
        entry("morning-chat", Mode::Chat, "see you tomorrow"),
        entry("lighthouse", Mode::Write, "the lamp went dark"),
    ]));
    let s = render(&app);
    assert_shows(&s, "Open a saved session");
    assert_shows(&s, "morning-chat");
    assert_shows(&s, "lighthouse");
    assert_shows(&s, "…the lamp went dark");
    assert_shows(&s, "2026-11-26T20:00:00Z");
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Enter));
    assert!(app.overlay.is_none());
    assert_eq!(app.mode, Mode::Write);
    assert_eq!(
        app.take_requests(),
        vec![Request::Load(Mode::Write, "lighthouse".into())]
    );
    app.handle_response(Response::Loaded {
        mode: Mode::Write,
        name: "lighthouse".into(),
        text: "and the lamp went dark".into(),
    });
    app.handle_response(Response::Idle);
    assert_shows(&render(&app), "and the lamp went dark");
}

/// QA's case: the picker cut the last words at the right edge, losing
/// the actual last words. They are cut on the left now.
#[test]
fn picker_shows_the_end_of_the_last_words() {
    let mut app = ready_app();
    app.handle_key(ctrl('o'));
    let tail: Vec<String> = (1..=12).map(|i| format!("word{i:02}")).collect();
    app.handle_response(Response::Sessions(vec![SessionEntry {
        name: "long".into(),
        tokens: 5,
        created: "2026-11-26T20:00:00Z".into(),
        tail: format!("{} THE-END", tail.join(" ")),
        mode: Mode::Write,
    }]));
    for w in [120, 90] {
        let s = render_at(&app, w, 40);
        let row = s.iter().find(|l| l.contains("long")).unwrap();
        assert!(row.contains(" THE-END│"), "{row}");
        assert!(row.contains("…"), "{row}");
        assert!(!row.contains("word01"), "{row}");
    }
}

#[test]
fn empty_picker_says_how_to_save() {
    let mut app = ready_app();
    app.handle_key(ctrl('o'));
    app.handle_response(Response::Sessions(vec![]));
    assert_shows(&render(&app), "no saved sessions yet");
}

#[test]
fn save_and_branch_ask_for_a_name() {
    let mut app = ready_app();
    app.handle_key(ctrl('s'));
    assert_shows(&render(&app), "Save session as");
    type_text(&mut app, "mine");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::Save(Mode::Chat, "mine".into())]
    );
    app.handle_response(Response::Idle);
    let mut st = status("assistant");
    st.session = Some("mine".into());
    app.handle_response(Response::Status(Mode::Chat, st));
    app.handle_key(ctrl('b'));
    assert_shows(&render(&app), "Branch: save a copy");
    // The branch name starts from the current one.
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::Branch(Mode::Chat, "mine-branch".into())]
    );
}

/// QA's case: the name field was pre-filled with the last name, typing
/// appended to it (`story1story1`) and Ctrl-U did nothing there or in the
/// settings value field. The suggestion is now selected (typing replaces
/// it, a cursor key keeps it) and Ctrl-U clears both fields.
#[test]
fn name_and_value_fields_clear_and_replace_their_suggestion() {
    let mut app = ready_app();
    let mut st = status("assistant");
    st.session = Some("story1".into());
    app.handle_response(Response::Status(Mode::Chat, st));
    app.handle_key(ctrl('s'));
    type_text(&mut app, "story2");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::Save(Mode::Chat, "story2".into())]
    );
    app.handle_response(Response::Idle);
    // A cursor key keeps the suggestion, to edit it.
    app.handle_key(ctrl('b'));
    app.handle_key(key(KeyCode::End));
    type_text(&mut app, "2");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::Branch(Mode::Chat, "story1-branch2".into())]
    );
    app.handle_response(Response::Idle);
    app.handle_key(ctrl('s'));
    app.handle_key(key(KeyCode::End));
    app.handle_key(ctrl('u'));
    match &app.overlay {
        Some(Overlay::Name(NameFor::Save, input)) => assert_eq!(input.text(), ""),
        other => panic!("expected the name prompt, got {other:?}"),
    }
    assert_shows(&render(&app), "Ctrl-U clears");
    type_text(&mut app, "fresh");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::Save(Mode::Chat, "fresh".into())]
    );
    app.handle_response(Response::Idle);
    // Settings: top-p's value is replaced by typing, and Ctrl-U clears.
    app.handle_key(key(KeyCode::F(2)));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Enter));
    type_text(&mut app, "0.4");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.chat_status.settings.as_ref().unwrap().sampler.top_p,
        0.4
    );
    app.handle_key(key(KeyCode::Enter));
    app.handle_key(key(KeyCode::Home));
    app.handle_key(ctrl('u'));
    type_text(&mut app, "0.3");
    assert_shows(&render(&app), "0.3▏");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.chat_status.settings.as_ref().unwrap().sampler.top_p,
        0.3
    );
}

#[test]
fn saving_over_another_session_asks_first() {
    let mut app = ready_app();
    app.mode = Mode::Write;
    app.handle_key(ctrl('s'));
    type_text(&mut app, "one");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::Save(Mode::Write, "one".into())]
    );
    // Meanwhile the user went to Chat; the question is about Write's save.
    app.handle_key(key(KeyCode::Tab));
    let taken = Response::NameTaken {
        mode: Mode::Write,
        name: "one".into(),
        branch: false,
        about: "900 tokens, saved 2026-11-26T20:00:00Z".into(),
    };
    app.handle_response(taken);
    app.handle_response(Response::Idle);
    assert_eq!(app.mode, Mode::Write);
    assert_eq!(
        app.overlay.as_ref().and_then(|o| match o {
            Overlay::Replace(r) => Some(r.clone()),
            _ => None,
        }),
        Some(Replace {
            what: NameFor::Save,
            mode: Mode::Write,
            name: "one".into(),
            about: "900 tokens, saved 2026-11-26T20:00:00Z".into(),
        })
    );
    let s = render(&app);
    assert_shows(&s, "Replace session `one`?");
    assert_shows(&s, "900 tokens, saved 2026-11-26T20:00:00Z");
    assert_shows(&s, "y replaces it");
    assert_shows(&s, "session `one` already exists");
    for (w, h) in [(1, 1), (30, 6)] {
        assert_eq!(render_at(&app, w, h).len(), h as usize);
    }
    // A stray Enter or other key does not replace it.
    app.handle_key(key(KeyCode::Enter));
    app.handle_key(key(KeyCode::Char('x')));
    assert!(app.take_requests().is_empty());
    assert!(matches!(app.overlay, Some(Overlay::Replace(_))));
    // n: back to the name, to pick another one.
    app.handle_key(key(KeyCode::Char('n')));
    match &app.overlay {
        Some(Overlay::Name(NameFor::Save, input)) => assert_eq!(input.text(), "one"),
        other => panic!("expected the name prompt, got {other:?}"),
    }
    assert!(app.take_requests().is_empty());
    type_text(&mut app, "-2");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.take_requests(),
        vec![Request::Save(Mode::Write, "one-2".into())]
    );
    app.handle_response(Response::Idle);
    // y replaces, for a branch too.
    app.handle_response(Response::NameTaken {
        mode: Mode::Write,
        name: "one".into(),
        branch: true,
        about: "900 tokens, saved 2026-11-26T20:00:00Z".into(),
    });
    app.handle_key(key(KeyCode::Char('y')));
    assert!(app.overlay.is_none());
    assert_eq!(
        app.take_requests(),
        vec![Request::Replace {
            mode: Mode::Write,
            name: "one".into(),
            branch: true
        }]
    );
    assert!(app.busy.is_some());
}

#[test]
fn typing_and_enter_send_a_message() {
    let mut app = ready_app();
    type_text(&mut app, "Hi");
    app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT));
    type_text(&mut app, "there");
    app.handle_key(key(KeyCode::Left));
    app.handle_key(key(KeyCode::Backspace));
    assert_eq!(app.chat.input.text(), "Hi\nthee");
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.take_requests(), vec![Request::Send("Hi\nthee".into())]);
    assert!(app.chat.input.is_empty());
    assert!(app.busy.is_some());
    assert_eq!(app.chat.entries[0].speaker, Speaker::User);
    // While busy, Enter does not send again.
    type_text(&mut app, "more");
    app.handle_key(key(KeyCode::Enter));
    assert!(app.take_requests().is_empty());
    assert_eq!(app.chat.input.text(), "more");
    app.handle_response(Response::Text(Mode::Chat, "Hello!".into(), 1240));
    app.handle_response(Response::Finished {
        mode: Mode::Chat,
        tokens: 3,
        tokens_per_s: 9.5,
        stop: "end of turn".into(),
    });
    app.handle_response(Response::Idle);
    assert!(app.busy.is_none());
    assert_eq!(app.chat.entries[1].text, "Hello!");
    assert_shows(&render(&app), "3 tokens, 9.5 tokens/s (end of turn)");
    // An empty message is not sent.
    app.handle_key(ctrl('u'));
    app.handle_key(key(KeyCode::Enter));
    assert!(app.take_requests().is_empty());
}

/// QA's case: while a reply streamed, Enter in Write, Ctrl-S and Ctrl-O
/// did nothing visible. Each now says why, next to the busy line, and
/// nothing typed is lost.
#[test]
fn keys_refused_while_generating_say_so() {
    let mut app = ready_app();
    type_text(&mut app, "Hello");
    app.handle_key(key(KeyCode::Enter));
    app.take_requests();
    app.handle_key(key(KeyCode::Tab));
    type_text(&mut app, "a storm");
    for k in [key(KeyCode::Enter), ctrl('s'), ctrl('o')] {
        app.message = None;
        app.handle_key(k);
        assert!(app.overlay.is_none(), "{k:?}");
        let s = render(&app);
        assert_shows(&s, "replying…");
        assert_shows(&s, "busy: generating in Chat (Esc stops it)");
    }
    assert!(app.take_requests().is_empty());
    assert_eq!(app.write.guidance.text(), "a storm");
}

#[test]
fn esc_and_ctrl_c_cancel_generation() {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut app = App::new(cancel.clone());
    app.handle_response(Response::Idle);
    type_text(&mut app, "go");
    app.handle_key(key(KeyCode::Enter));
    app.handle_key(key(KeyCode::Esc));
    assert!(cancel.load(Ordering::SeqCst), "Esc sets the cancel flag");
    assert!(!app.quit);
    app.handle_response(Response::Idle);
    assert!(
        !cancel.load(Ordering::SeqCst),
        "cleared when the engine is idle"
    );
    type_text(&mut app, "again");
    app.handle_key(key(KeyCode::Enter));
    app.handle_key(ctrl('c'));
    assert!(cancel.load(Ordering::SeqCst), "Ctrl-C stops a generation");
    assert!(!app.quit, "…without quitting");
    app.handle_response(Response::Idle);
    app.handle_key(ctrl('c'));
    assert!(app.quit, "Ctrl-C when idle quits");
}

#[test]
fn retry_continue_undo_and_reset() {
    let mut app = ready_app();
    app.handle_key(ctrl('r'));
    assert!(app.take_requests().is_empty(), "nothing to retry yet");
    type_text(&mut app, "q");
    app.handle_key(key(KeyCode::Enter));
    app.handle_response(Response::Text(Mode::Chat, "first".into(), 1240));
    app.handle_response(Response::Idle);
    app.take_requests();
    app.handle_key(ctrl('r'));
    assert_eq!(app.take_requests(), vec![Request::Retry(Mode::Chat)]);
    assert_eq!(app.chat.entries[1].text, "", "the old reply is replaced");
    app.handle_response(Response::Text(Mode::Chat, "second".into(), 1240));
    app.handle_response(Response::Idle);
    app.handle_key(ctrl('e'));
    assert_eq!(app.take_requests(), vec![Request::Continue(Mode::Chat)]);
    app.handle_response(Response::Text(Mode::Chat, " more".into(), 1241));
    app.handle_response(Response::Idle);
    assert_eq!(app.chat.entries[1].text, "second more");
    app.handle_key(ctrl('z'));
    assert_eq!(app.take_requests(), vec![Request::Undo]);
    app.handle_response(Response::Undone);
    app.handle_response(Response::Idle);
    assert!(app.chat.entries.is_empty());
    app.handle_key(ctrl('n'));
    assert_eq!(app.take_requests(), vec![Request::Reset(Mode::Chat)]);
}

#[test]
fn small_and_resized_terminals_still_draw() {
    let mut app = ready_app();
    type_text(&mut app, "hello");
    app.handle_key(key(KeyCode::Enter));
    for (w, h) in [(20, 8), (60, 15), (200, 60), (1, 1)] {
        let s = render_at(&app, w, h);
        assert_eq!(s.len(), h as usize);
    }
    app.handle_key(key(KeyCode::Char('?')));
    let _ = render_at(&app, 30, 10);
}

#[test]
fn paste_inserts_newlines_without_sending() {
    let mut app = ready_app();
    app.handle_paste("line one\r\nline two");
    assert_eq!(app.chat.input.text(), "line one\nline two");
    assert!(app.take_requests().is_empty());
}

/// QA's case: Ctrl-Z in Write did nothing at all. Write keeps no undo
/// history, so it says so and names the keys that do go back; in Chat,
/// Ctrl-Z while busy still says why it waits.
#[test]
fn ctrl_z_in_write_says_there_is_nothing_to_undo() {
    let mut app = ready_app();
    app.handle_key(key(KeyCode::Tab));
    app.handle_key(ctrl('z'));
    assert!(app.take_requests().is_empty());
    let (is_err, m) = app.message.clone().expect("Ctrl-Z says something");
    assert!(is_err, "{m}");
    assert!(m.starts_with("nothing to undo in Write"), "{m}");
    assert!(m.contains("Ctrl-R") && m.contains("Ctrl-N"), "{m}");
    assert!(!m.contains("/undo"), "{m}");
    assert_shows(&render(&app), "nothing to undo in Write");
    app.handle_key(key(KeyCode::Tab));
    type_text(&mut app, "q");
    app.handle_key(key(KeyCode::Enter));
    app.take_requests();
    app.handle_key(ctrl('z'));
    assert!(app.take_requests().is_empty());
    let (_, m) = app.message.clone().unwrap();
    assert_eq!(m, "busy: generating in Chat (Esc stops it)");
}

/// QA's case: the help's Ctrl-T line left out min-p. It names every row
/// of the settings panel (the three penalty rows as "penalties"), and the
/// README's key table says the same.
#[test]
fn settings_help_names_every_setting() {
    let (_, _, what) = KEYS
        .iter()
        .find(|(_, k, _)| *k == "Ctrl-T / F2")
        .expect("Ctrl-T is in the key list");
    for (_, label, _) in SETTINGS_ROWS {
        let label = label.to_lowercase();
        let named = if label.contains("penalty") {
            "penalties".to_string()
        } else {
            label
        };
        assert!(what.contains(&named), "`{what}` does not name {named}");
    }
    let mut app = ready_app();
    app.handle_key(key(KeyCode::F(1)));
    let s = render(&app);
    let row = s
        .iter()
        .find(|l| l.contains("Ctrl-T / F2"))
        .expect("the help shows Ctrl-T");
    assert!(row.contains("min-p"), "{row}");
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    assert!(
        readme.contains(&format!("| anywhere | Ctrl-T / F2 | {what} |")),
        "README's Ctrl-T row differs from `{what}`"
    );
}

/// QA's case: the status bar's token count stood still while a reply
/// streamed and jumped at the end. Each piece of text carries the count,
/// and the bar of that piece's mode shows it at once.
#[test]
fn the_token_count_moves_as_text_arrives() {
    let mut app = ready_app();
    type_text(&mut app, "Hello");
    app.handle_key(key(KeyCode::Enter));
    assert_shows(&render(&app), "1234 tokens in state");
    app.handle_response(Response::Text(Mode::Chat, "One".into(), 1240));
    assert_shows(&render(&app), "1240 tokens in state");
    app.handle_response(Response::Text(Mode::Chat, " two".into(), 1243));
    let s = render(&app);
    assert_shows(&s, "1243 tokens in state");
    assert_shows(&s, "replying…");
    // Write's count is its own.
    app.handle_key(key(KeyCode::Tab));
    assert_shows(&render(&app), "1234 tokens in state");
    app.handle_response(Response::Text(Mode::Write, "Chapter".into(), 1300));
    assert_shows(&render(&app), "1300 tokens in state");
    assert_eq!(app.status(Mode::Chat).tokens_in_state, 1243);
}

/// The status bar's tokens/s moves during a generation too (it used to
/// change only when the generation ended): from the first piece of text
/// on, tokens since then over the time since then.
#[test]
fn tokens_per_second_move_as_text_arrives() {
    let mut app = ready_app();
    type_text(&mut app, "Hello");
    app.handle_key(key(KeyCode::Enter));
    assert_shows(&render(&app), "42.5 tokens/s");
    // The first piece only marks the start (its time includes the
    // prompt's prefill).
    app.handle_response(Response::Text(Mode::Chat, "One".into(), 1240));
    assert_shows(&render(&app), "42.5 tokens/s");
    std::thread::sleep(std::time::Duration::from_millis(150));
    app.handle_response(Response::Text(Mode::Chat, " two".into(), 1241));
    let live = app.status(Mode::Chat).tokens_per_s;
    // 1 token in at least 0.15 s: at most 6.7 tokens/s (the bar said 42.5).
    assert!(live > 0.0 && live <= 1.0 / 0.15, "{live}");
    assert_shows(&render(&app), &format!("{live:.1} tokens/s"));
}

#[test]
fn a_live_rate_needs_a_token_and_a_tenth_of_a_second() {
    use quill::tui::app::live_rate;
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let later = |ms| t0 + Duration::from_millis(ms);
    assert_eq!(live_rate((t0, 100), (later(50), 110)), None);
    assert_eq!(live_rate((t0, 100), (later(500), 100)), None);
    assert_eq!(live_rate((t0, 100), (later(500), 90)), None);
    let r = live_rate((t0, 100), (later(500), 110)).unwrap();
    assert!((r - 20.0).abs() < 1e-9, "{r}");
}

mod engine {
    //! The engine thread on the random-weight v7 fixture: text streams
    //! back, Esc's flag stops a reply, sessions save, list and load. The
    //! fixture writes gibberish; these tests check the mechanics.

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{Receiver, Sender};
    use std::sync::Arc;
    use std::time::Duration;

    use quill::chat::Persona;
    use quill::model::Model;
    use quill::sampler::SamplerSettings;
    use quill::snapshot::Snapshot;
    use quill::tokenizer::Tokenizer;
    use quill::tui::engine::{spawn, EngineConfig};
    use quill::tui::protocol::{Mode, Request, Response, Settings};
    use quill::tui::story::CHAPTER_LENGTH_KEY;
    use quill::writer::prompt::Prompt;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/random/rand-v7.safetensors")
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quill-tui-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    struct Harness {
        tx: Sender<Request>,
        rx: Receiver<Response>,
        cancel: Arc<AtomicBool>,
    }

    impl Harness {
        fn start(dir: &std::path::Path, prompt: Prompt, max_tokens: usize) -> Harness {
            let model = Arc::new(Model::load(&fixture()).unwrap());
            let tokenizer =
                Arc::new(Tokenizer::new(quill::tokenizer::TokenizerKind::Bytes).unwrap());
            // A short opening keeps the prefill quick on the fixture.
            let persona = Persona::parse(
                "name = \"tester\"\n[[opening]]\nuser = \"Hi\"\nassistant = \"Hello.\"\n",
                "test",
                "tester",
            )
            .unwrap();
            let config = EngineConfig {
                model,
                tokenizer,
                persona,
                prompt,
                seed: 7,
                max_tokens: Some(max_tokens),
                sessions_dir: Some(dir.join("sessions")),
                cache_dir: None,
            };
            let cancel = Arc::new(AtomicBool::new(false));
            let (rtx, rx) = std::sync::mpsc::channel();
            let (tx, _thread) = spawn(config, cancel.clone(), move |r| {
                let _ = rtx.send(r);
            })
            .unwrap();
            let h = Harness { tx, rx, cancel };
            h.until_idle();
            h
        }

        /// Everything the engine says up to its next Idle.
        fn until_idle(&self) -> Vec<Response> {
            let mut out = Vec::new();
            loop {
                let r = self
                    .rx
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the engine answers within a minute");
                if r == Response::Idle {
                    return out;
                }
                out.push(r);
            }
        }

        fn ask(&self, req: Request) -> Vec<Response> {
            self.tx.send(req).unwrap();
            self.until_idle()
        }
    }

    fn text_of(rs: &[Response], mode: Mode) -> String {
        rs.iter()
            .filter_map(|r| match r {
                Response::Text(m, t, _) if *m == mode => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn name_taken(rs: &[Response]) -> Option<(Mode, String, bool, String)> {
        rs.iter().find_map(|r| match r {
            Response::NameTaken {
                mode,
                name,
                branch,
                about,
            } => Some((*mode, name.clone(), *branch, about.clone())),
            _ => None,
        })
    }

    /// QA's case: a story saved under a chat session's name replaced it
    /// unasked. Now the engine asks (NameTaken) and writes nothing until
    /// told to replace; a mode saves silently over what it saved itself.
    #[test]
    fn saving_over_another_session_needs_replace() {
        let dir = temp_dir("replace");
        let h = Harness::start(&dir, untitled(&dir), 8);
        let path = dir.join("sessions/one.qs");
        h.ask(Request::Send("Hello".into()));
        let rs = h.ask(Request::Save(Mode::Chat, "one".into()));
        assert!(name_taken(&rs).is_none(), "a new name is free: {rs:?}");
        let chat_bytes = std::fs::read(&path).expect("chat saved");
        // The chat saves over its own session silently.
        h.ask(Request::Send("More".into()));
        let rs = h.ask(Request::Save(Mode::Chat, "one".into()));
        assert!(name_taken(&rs).is_none(), "{rs:?}");
        let chat_bytes_2 = std::fs::read(&path).unwrap();
        assert_ne!(chat_bytes_2, chat_bytes);

        h.ask(Request::WriteChapter(String::new()));
        for req in [
            Request::Save(Mode::Write, "one".into()),
            Request::Branch(Mode::Write, "one".into()),
        ] {
            let branch = matches!(req, Request::Branch(..));
            let rs = h.ask(req);
            let (mode, name, b, about) = name_taken(&rs).expect("asks first");
            assert_eq!((mode, name.as_str(), b), (Mode::Write, "one", branch));
            assert!(about.contains(" tokens, saved 20"), "{about}");
            assert!(!about.contains("story"), "it is a chat: {about}");
            assert!(!rs.iter().any(|r| matches!(r, Response::Notice(_))));
            assert_eq!(
                std::fs::read(&path).unwrap(),
                chat_bytes_2,
                "the chat session was touched"
            );
        }
        let rs = h.ask(Request::Replace {
            mode: Mode::Write,
            name: "one".into(),
            branch: false,
        });
        assert!(
            rs.iter()
                .any(|r| matches!(r, Response::Notice(m) if m.contains("saved story `one`"))),
            "{rs:?}"
        );
        let story_bytes = std::fs::read(&path).unwrap();
        assert_ne!(story_bytes, chat_bytes_2);
        // Write now owns `one`; the chat, whose session was replaced, asks.
        let rs = h.ask(Request::Save(Mode::Write, "one".into()));
        assert!(name_taken(&rs).is_none(), "{rs:?}");
        let rs = h.ask(Request::Save(Mode::Chat, "one".into()));
        let (_, _, _, about) = name_taken(&rs).expect("the chat asks");
        assert!(about.starts_with("a story of "), "{about}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn untitled(dir: &std::path::Path) -> Prompt {
        let p = dir.join("lighthouse.toml");
        std::fs::write(
            &p,
            "title = \"The Lighthouse\"\npremise = \"A keeper alone.\"\n[[chapter]]\nheading = \"The Letter\"\nlength = 12\n",
        )
        .unwrap();
        Prompt::load(&p, None).unwrap()
    }

    fn fable(dir: &std::path::Path) -> Prompt {
        let p = dir.join("fable.toml");
        std::fs::write(
            &p,
            "title = \"The Fox\"\npremise = \"A proud fox.\"\n[[chapter]]\nheading = \"I. The Boast\"\nguidance = \"The fox boasts.\"\nlength = 8\n[[chapter]]\nheading = \"II. The Night\"\nlength = 8\n[[chapter]]\nheading = \"III. The Moral\"\nlength = 8\n",
        )
        .unwrap();
        Prompt::load(&p, None).unwrap()
    }

    fn label_of(rs: &[Response]) -> Option<String> {
        rs.iter().rev().find_map(|r| match r {
            Response::Status(Mode::Write, s) => Some(s.label.clone()),
            _ => None,
        })
    }

    /// QA's case: with a fable as the prompt file, a story saved from
    /// another prompt file was loaded under the fable's title and its next
    /// chapter got the fable's heading and guidance. A story from another
    /// prompt file keeps its title and goes on with plain "Chapter N"; the
    /// prompt file's own story keeps its plan.
    #[test]
    fn a_loaded_story_keeps_its_own_identity() {
        let dir = temp_dir("identity");
        {
            let h = Harness::start(&dir, untitled(&dir), 8);
            h.ask(Request::WriteChapter(String::new()));
            h.ask(Request::Save(Mode::Write, "light".into()));
        }
        let h = Harness::start(&dir, fable(&dir), 8);
        h.ask(Request::WriteChapter(String::new()));
        h.ask(Request::Save(Mode::Write, "fox".into()));
        let rs = h.ask(Request::Load(Mode::Write, "light".into()));
        assert_eq!(label_of(&rs).as_deref(), Some("The Lighthouse"), "{rs:?}");
        assert!(
            rs.iter().any(|r| matches!(r, Response::Notice(m)
                if m.contains("`The Lighthouse` is not `The Fox`") && m.contains("Chapter N"))),
            "{rs:?}"
        );
        let rs = h.ask(Request::WriteChapter(String::new()));
        let ch = text_of(&rs, Mode::Write);
        assert!(ch.starts_with("\n\n## Chapter 2\n\n"), "{ch:?}");
        // Saved again, it is still the lighthouse's story.
        h.ask(Request::Save(Mode::Write, "light".into()));
        let rs = h.ask(Request::Load(Mode::Write, "light".into()));
        assert_eq!(label_of(&rs).as_deref(), Some("The Lighthouse"));
        let rs = h.ask(Request::WriteChapter(String::new()));
        assert!(text_of(&rs, Mode::Write).starts_with("\n\n## Chapter 3\n\n"));
        // The fable's own story follows the fable's plan.
        let rs = h.ask(Request::Load(Mode::Write, "fox".into()));
        assert_eq!(label_of(&rs).as_deref(), Some("The Fox"));
        assert!(
            !rs.iter().any(|r| matches!(r, Response::Notice(_))),
            "{rs:?}"
        );
        let rs = h.ask(Request::WriteChapter(String::new()));
        let ch = text_of(&rs, Mode::Write);
        assert!(ch.starts_with("\n\n## II. The Night\n\n"), "{ch:?}");
        // Start over returns to the fable, plan and title.
        h.ask(Request::Load(Mode::Write, "light".into()));
        let rs = h.ask(Request::Reset(Mode::Write));
        assert_eq!(label_of(&rs).as_deref(), Some("The Fox"));
        let rs = h.ask(Request::WriteChapter(String::new()));
        assert!(text_of(&rs, Mode::Write).starts_with("## I. The Boast\n\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn write_length(rs: &[Response]) -> Option<usize> {
        rs.iter().rev().find_map(|r| match r {
            Response::Status(Mode::Write, s) => s.settings.as_ref().map(|s| s.max_tokens),
            _ => None,
        })
    }

    fn set_write_length(h: &Harness, n: usize) -> Option<usize> {
        write_length(&h.ask(Request::Settings {
            mode: Mode::Write,
            settings: Settings {
                sampler: SamplerSettings::default(),
                max_tokens: n,
            },
            length_set: true,
        }))
    }

    fn load_story(h: &Harness, name: &str) -> Vec<Response> {
        let rs = h.ask(Request::Load(Mode::Write, name.into()));
        assert!(
            rs.iter().any(|r| matches!(r, Response::Loaded { .. })),
            "{rs:?}"
        );
        rs
    }

    /// QA's case: a chapter length set in Write's settings was lost when
    /// the story was saved and opened again. A story records it as a chat
    /// records its reply length; one that follows its plan's lengths goes
    /// back to them; one saved before lengths were recorded keeps the
    /// current length.
    #[test]
    fn a_story_keeps_its_chapter_length() {
        let dir = temp_dir("length");
        {
            // Saved untouched: it follows the plan (12 tokens a chapter).
            let h = Harness::start(&dir, untitled(&dir), 8);
            h.ask(Request::Save(Mode::Write, "plain".into()));
        }
        let h = Harness::start(&dir, untitled(&dir), 8);
        assert_eq!(set_write_length(&h, 5), Some(5));
        let rs = h.ask(Request::WriteChapter(String::new()));
        let written = rs.iter().find_map(|r| match r {
            Response::Finished { tokens, .. } => Some(*tokens),
            _ => None,
        });
        assert!(written.is_some_and(|t| t <= 5), "{rs:?}");
        h.ask(Request::Save(Mode::Write, "short".into()));
        assert_eq!(set_write_length(&h, 30), Some(30));
        assert_eq!(write_length(&load_story(&h, "short")), Some(5));
        // Set back to the plan's own length, it is that length (it used
        // to stay at 5, the plan's length counting as "unchanged").
        assert_eq!(set_write_length(&h, 12), Some(12));
        assert_eq!(set_write_length(&h, 5), Some(5));
        assert_eq!(write_length(&load_story(&h, "plain")), Some(12));

        // A story file from before the length was recorded still loads,
        // and the length set now stays.
        let sessions = dir.join("sessions");
        let mut old = Snapshot::load(&sessions.join("short.qs")).unwrap();
        assert_eq!(
            old.meta.extra.remove(CHAPTER_LENGTH_KEY).as_deref(),
            Some("5")
        );
        old.save(&sessions.join("old.qs")).unwrap();
        assert_eq!(set_write_length(&h, 30), Some(30));
        assert_eq!(write_length(&load_story(&h, "old")), Some(30));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A chapter length is set only by the user setting it: a change of
    /// temperature made while chapter 1 (6 tokens planned) is written
    /// reaches the engine after it, carrying the 6 shown then, and must not
    /// pin 6 onto chapter 2 (20 planned). Ctrl-E goes on with chapter 1,
    /// so by chapter 1's length, not the next one's.
    #[test]
    fn a_chapter_length_changes_only_when_the_user_sets_it() {
        let dir = temp_dir("planlen");
        let p = dir.join("two.toml");
        std::fs::write(
            &p,
            "title = \"Two\"\npremise = \"Two nights.\"\n[[chapter]]\nheading = \"One\"\nlength = 6\n[[chapter]]\nheading = \"Two\"\nlength = 20\n",
        )
        .unwrap();
        let h = Harness::start(&dir, Prompt::load(&p, None).unwrap(), 8);
        let finished = |rs: &[Response]| {
            rs.iter()
                .find_map(|r| match r {
                    Response::Finished { tokens, .. } => Some(*tokens),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("not finished: {rs:?}"))
        };
        let rs = h.ask(Request::WriteChapter(String::new()));
        assert_eq!(finished(&rs), 6, "{rs:?}");
        let rs = h.ask(Request::Settings {
            mode: Mode::Write,
            settings: Settings {
                sampler: SamplerSettings {
                    temperature: 0.5,
                    ..SamplerSettings::default()
                },
                max_tokens: 6,
            },
            length_set: false,
        });
        assert_eq!(write_length(&rs), Some(20), "chapter 2's plan");
        assert_eq!(finished(&h.ask(Request::Continue(Mode::Write))), 6);
        let rs = h.ask(Request::WriteChapter(String::new()));
        assert_eq!(finished(&rs), 20, "{rs:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// QA's case: Ctrl-Z with nothing to undo showed `quill chat`'s
    /// `/undo: nothing to undo`; the TUI has no slash commands.
    #[test]
    fn nothing_to_undo_is_said_in_the_tui_s_words() {
        let dir = temp_dir("undo");
        let h = Harness::start(&dir, untitled(&dir), 4);
        let error = |rs: Vec<Response>| {
            rs.into_iter()
                .find_map(|r| match r {
                    Response::Error(m) => Some(m),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("an error"))
        };
        let m = error(h.ask(Request::Undo));
        assert!(m.starts_with("nothing to undo: Ctrl-Z takes back"), "{m}");
        assert!(!m.contains("/undo"), "{m}");
        h.ask(Request::Send("Hello".into()));
        let rs = h.ask(Request::Undo);
        assert!(rs.contains(&Response::Undone), "{rs:?}");
        assert_eq!(error(h.ask(Request::Undo)), m);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Each piece of text carries the tokens in its mode's state then:
    /// the count rises during a generation, never back, and ends at most
    /// at the count the status reports once it is done.
    #[test]
    fn streamed_text_carries_the_token_count() {
        let dir = temp_dir("count");
        let h = Harness::start(&dir, untitled(&dir), 24);
        for (mode, req) in [
            (Mode::Chat, Request::Send("Hello".into())),
            (Mode::Write, Request::WriteChapter(String::new())),
        ] {
            let rs = h.ask(req);
            let counts: Vec<u64> = rs
                .iter()
                .filter_map(|r| match r {
                    Response::Text(m, _, n) if *m == mode => Some(*n),
                    _ => None,
                })
                .collect();
            let after = rs
                .iter()
                .rev()
                .find_map(|r| match r {
                    Response::Status(m, s) if *m == mode => Some(s.tokens_in_state),
                    _ => None,
                })
                .expect("a status after the generation");
            assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
            assert!(
                counts.first() < counts.last(),
                "{mode:?}: the count moves while text streams: {counts:?}"
            );
            assert!(
                counts.iter().all(|&n| n > 0 && n <= after),
                "{counts:?} {after}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn chat_streams_stops_saves_lists_and_loads() {
        let dir = temp_dir("chat");
        let h = Harness::start(&dir, untitled(&dir), 16);
        let rs = h.ask(Request::Send("Hello".into()));
        let text = text_of(&rs, Mode::Chat);
        assert!(!text.is_empty(), "reply text streams: {rs:?}");
        let fin = rs.iter().find_map(|r| match r {
            Response::Finished { tokens, .. } => Some(*tokens),
            _ => None,
        });
        assert!(fin.is_some_and(|t| t > 0 && t <= 16), "{rs:?}");
        let status = rs
            .iter()
            .find_map(|r| match r {
                Response::Status(Mode::Chat, s) => Some(s.clone()),
                _ => None,
            })
            .expect("a status after the reply");
        assert_eq!(status.model, "rand-v7.safetensors");
        assert_eq!(status.label, "tester");
        assert!(status.tokens_in_state > 0 && status.state_bytes > 0);
        assert!(status.tokens_per_s > 0.0);

        // The cancel flag stops a reply at its first piece.
        h.tx.send(Request::Settings {
            mode: Mode::Chat,
            settings: Settings {
                sampler: status.settings.clone().unwrap().sampler,
                max_tokens: 400,
            },
            length_set: true,
        })
        .unwrap();
        h.until_idle();
        h.cancel.store(true, Ordering::SeqCst);
        // The engine clears the flag when a request starts, so set it
        // from the first piece instead.
        h.tx.send(Request::Send("Go on".into())).unwrap();
        let mut tokens = None;
        let mut pieces = 0;
        loop {
            match h.rx.recv_timeout(Duration::from_secs(60)).unwrap() {
                Response::Text(..) => {
                    pieces += 1;
                    h.cancel.store(true, Ordering::SeqCst);
                }
                Response::Finished {
                    tokens: t, stop, ..
                } => {
                    assert_eq!(stop, "stopped");
                    tokens = Some(t);
                }
                Response::Idle => break,
                _ => {}
            }
        }
        assert!(pieces >= 1);
        assert!(tokens.is_some_and(|t| t < 400), "stopped early: {tokens:?}");

        let rs = h.ask(Request::Save(Mode::Chat, "first".into()));
        assert!(
            rs.iter()
                .any(|r| matches!(r, Response::Notice(m) if m.contains("saved session `first`"))),
            "{rs:?}"
        );
        assert!(dir.join("sessions/first.qs").is_file());
        let rs = h.ask(Request::Branch(Mode::Chat, "second".into()));
        assert!(
            rs.iter()
                .any(|r| matches!(r, Response::Notice(m) if m.contains("branched"))),
            "{rs:?}"
        );
        let rs = h.ask(Request::ListSessions);
        let Some(Response::Sessions(list)) = rs.first() else {
            panic!("{rs:?}")
        };
        let mut names: Vec<_> = list.iter().map(|e| e.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["first", "second"]);
        assert!(list.iter().all(|e| e.mode == Mode::Chat && e.tokens > 0));
        // The picker describes a session from its header alone: a copy
        // cut off after it is listed with its tokens, not as unreadable.
        let bytes = std::fs::read(dir.join("sessions/first.qs")).unwrap();
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        std::fs::write(dir.join("sessions/cut.qs"), &bytes[..header_end]).unwrap();
        let rs = h.ask(Request::ListSessions);
        let Some(Response::Sessions(list)) = rs.first() else {
            panic!("{rs:?}")
        };
        let first = list.iter().find(|e| e.name == "first").expect("first");
        let cut = list.iter().find(|e| e.name == "cut").expect("cut");
        assert_eq!((cut.tokens, &cut.tail), (first.tokens, &first.tail));
        std::fs::remove_file(dir.join("sessions/cut.qs")).unwrap();
        let rs = h.ask(Request::Load(Mode::Chat, "first".into()));
        assert!(
            rs.iter().any(
                |r| matches!(r, Response::Loaded { mode: Mode::Chat, name, .. } if name == "first")
            ),
            "{rs:?}"
        );
        let rs = h.ask(Request::Load(Mode::Chat, "nope".into()));
        assert!(rs.iter().any(|r| matches!(r, Response::Error(_))), "{rs:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn write_chapters_retry_continue_save_and_load() {
        let dir = temp_dir("write");
        let h = Harness::start(&dir, untitled(&dir), 8);
        let rs = h.ask(Request::WriteChapter("a storm comes".into()));
        let ch1 = text_of(&rs, Mode::Write);
        assert!(ch1.starts_with("## The Letter\n\n"), "{ch1:?}");
        assert!(
            !ch1.contains("a storm comes"),
            "guidance is read, not shown"
        );
        let rs = h.ask(Request::Retry(Mode::Write));
        assert!(text_of(&rs, Mode::Write).starts_with("## The Letter\n\n"));
        let rs = h.ask(Request::Continue(Mode::Write));
        assert!(rs.iter().any(|r| matches!(
            r,
            Response::Finished {
                mode: Mode::Write,
                ..
            }
        )));
        // The next chapter falls back to "Chapter 2" after a blank line.
        let rs = h.ask(Request::WriteChapter(String::new()));
        assert!(text_of(&rs, Mode::Write).starts_with("\n\n## Chapter 2\n\n"));
        let rs = h.ask(Request::Save(Mode::Write, "tale".into()));
        assert!(
            rs.iter()
                .any(|r| matches!(r, Response::Notice(m) if m.contains("saved story `tale`"))),
            "{rs:?}"
        );
        let rs = h.ask(Request::ListSessions);
        let Some(Response::Sessions(list)) = rs.first() else {
            panic!("{rs:?}")
        };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].mode, Mode::Write);
        let rs = h.ask(Request::Reset(Mode::Write));
        assert!(rs.iter().any(|r| matches!(r, Response::WasReset { mode: Mode::Write, intro } if intro.starts_with("# The Lighthouse"))));
        let rs = h.ask(Request::Load(Mode::Write, "tale".into()));
        let text = rs
            .iter()
            .find_map(|r| match r {
                Response::Loaded { text, .. } => Some(text.clone()),
                _ => None,
            })
            .expect("loaded");
        // Saving again under the name loaded: no question.
        let rs = h.ask(Request::Save(Mode::Write, "tale".into()));
        assert!(
            rs.iter()
                .any(|r| matches!(r, Response::Notice(m) if m.contains("saved story `tale`"))),
            "{rs:?}"
        );
        assert!(
            text.starts_with("# The Lighthouse\n\nA keeper alone.\n\n## The Letter"),
            "{text:?}"
        );
        assert!(text.contains("## Chapter 2"));
        // Numbering goes on after a load.
        let rs = h.ask(Request::WriteChapter(String::new()));
        assert!(text_of(&rs, Mode::Write).starts_with("\n\n## Chapter 3\n\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A real terminal: tmux runs `quill tui` on the v7 fixture, types a
/// message, waits for the reply, saves, quits, and checks the terminal is
/// restored (tests/tmux_tui.sh).
#[test]
fn tmux_smoke_test() {
    use std::process::Command;
    let have_tmux = Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        have_tmux,
        "!!! tmux is not installed: the quill tui smoke test CANNOT RUN. Install it (apt-get install tmux; .ci/run does) !!!"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("quill-tui-tmux-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new("bash")
        .arg(root.join("tests/tmux_tui.sh"))
        .arg(env!("CARGO_BIN_EXE_quill"))
        .arg(root.join("tests/fixtures/random/rand-v7.safetensors"))
        .arg(&dir)
        .output()
        .expect("run tests/tmux_tui.sh");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tests/tmux_tui.sh failed:\n{log}");
    assert!(log.contains("all steps passed"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A terminal that goes away (its tmux server killed: as an SSH connection
/// dropping) ends the app. It used to stay alive with its input thread
/// reading end-of-file in a loop, a core busy, for as long as nobody
/// noticed.
#[cfg(target_os = "linux")]
#[test]
fn the_app_ends_when_its_terminal_hangs_up() {
    use std::process::Command;
    let socket = format!("quill-hangup-{}", std::process::id());
    let dir = std::env::temp_dir().join(&socket);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("pid");
    // The server's socket inside `dir` (not tmux's own folder, where a
    // killed server leaves its socket file behind), so it goes with `dir`.
    let socket = dir.join("tmux.sock").display().to_string();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/random/rand-v7.safetensors");
    let cmd = format!(
        "echo $$ > {pid}; QUILL_DATA_DIR={d}/data QUILL_CACHE_DIR={d}/cache exec {bin} tui --model {model}",
        pid = pid_file.display(),
        d = dir.display(),
        bin = env!("CARGO_BIN_EXE_quill"),
        model = model.display()
    );
    let started = Command::new("tmux")
        .args([
            "-S",
            &socket,
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            &cmd,
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        started,
        "!!! tmux could not start: this test CANNOT RUN (install tmux) !!!"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "quill tui never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Let the app draw and settle, then take its terminal away.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = Command::new("tmux")
        .args(["-S", &socket, "kill-server"])
        .status();
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < gone_by {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let still = alive(pid);
    if still {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!still, "quill tui kept running after its terminal hung up");
}

/// The README's key table lists every key the help overlay lists.
#[test]
fn readme_documents_every_key() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let start = readme
        .find("## Full-screen app (`quill tui`)")
        .expect("README has a quill tui section");
    let section = &readme[start..];
    for (place, key, _) in KEYS {
        let k = key.replace('?', "`?`");
        assert!(
            section.contains(&format!("| {place} | {k} |")),
            "README's key table lacks `{place} | {key}`"
        );
    }
}

#[test]
fn an_engine_failure_quits_with_its_message() {
    let mut app = ready_app();
    app.handle_response(Response::Fatal("the engine thread panicked at x".into()));
    assert!(app.quit);
    assert_eq!(
        app.fatal.as_deref(),
        Some("the engine thread panicked at x")
    );
}
