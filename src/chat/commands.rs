//! What a line typed into the chat means: a message, or one of the slash
//! commands. Parsing only; [`ChatEngine`](super::ChatEngine) carries them out.

use super::format::Think;
use super::{ChatError, Result};

/// A slash command with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/help`: list the commands.
    Help,
    /// `/reset`: back to the persona's opening, history forgotten.
    Reset,
    /// `/retry`: a new reply in place of the last one.
    Retry,
    /// `/continue`: the assistant goes on with its last reply.
    Continue,
    /// `/undo`: drop the last exchange.
    Undo,
    /// `/save NAME`: keep the conversation as a named session (refused
    /// when NAME holds a session this chat did not load or save).
    Save(String),
    /// `/save NAME!`: the same, replacing whatever session NAME holds.
    SaveOver(String),
    /// `/load NAME`: go back to a saved session.
    Load(String),
    /// `/sessions`: list the saved sessions.
    Sessions,
    /// `/set key=value ...`: change sampler settings or the reply length.
    Set(Vec<(String, String)>),
    /// `/show`: settings, tokens in state, state size, model.
    Show,
    /// `/think on|off`: G1 reasoning before replies.
    Think(Think),
    /// `/quit`: leave.
    Quit,
}

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing but whitespace.
    Empty,
    /// A message for the assistant.
    Message(String),
    /// A command.
    Command(Command),
}

/// Every command: name, arguments, what it does (for `/help` and tab
/// completion).
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("/help", "", "list the commands"),
    ("/reset", "", "start over from the persona's opening"),
    ("/retry", "", "a new reply in place of the last one"),
    ("/continue", "", "let the assistant go on with its last reply"),
    ("/undo", "", "drop the last exchange (your message and the reply)"),
    (
        "/save",
        "NAME[!]",
        "save the conversation as session NAME (NAME! replaces another session of that name)",
    ),
    ("/load", "NAME", "go back to session NAME"),
    ("/sessions", "", "list saved sessions"),
    (
        "/set",
        "KEY=VALUE ...",
        "change settings: temperature top_p top_k min_p presence frequency penalty_decay max_tokens seed",
    ),
    ("/show", "", "settings, tokens in state, state size, model"),
    ("/think", "on|off", "G1 models: reason before answering, or not"),
    ("/quit", "", "leave (so do Ctrl-D and Ctrl-C on an empty line)"),
];

/// The `/help` text.
pub fn help_text() -> String {
    let mut s = String::new();
    for (name, args, what) in COMMANDS {
        let head = if args.is_empty() {
            name.to_string()
        } else {
            format!("{name} {args}")
        };
        s.push_str(&format!("  {head:<22} {what}\n"));
    }
    s.push_str(
        "  End a line with \\ to write several lines; Ctrl-C stops a reply.\n  Start a message with // to send one that begins with /.",
    );
    s
}

/// Understands a line. A line starting with `//` is a message starting
/// with `/`; any other line starting with `/` must be a command.
pub fn parse_input(line: &str) -> Result<Input> {
    let t = line.trim();
    if t.is_empty() {
        return Ok(Input::Empty);
    }
    if let Some(rest) = t.strip_prefix("//") {
        return Ok(Input::Message(format!("/{rest}")));
    }
    if !t.starts_with('/') {
        return Ok(Input::Message(line.to_string()));
    }
    let (name, args) = match t.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (t, ""),
    };
    let no_args = |cmd: &'static str, c: Command| -> Result<Command> {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(ChatError::Usage {
                command: cmd,
                message: format!("takes no arguments (got `{args}`)"),
            })
        }
    };
    let one_name = |cmd: &'static str| -> Result<String> {
        if args.is_empty() || args.contains(char::is_whitespace) {
            Err(ChatError::Usage {
                command: cmd,
                message: format!("give one session name, as in `{cmd} mychat`"),
            })
        } else {
            Ok(args.to_string())
        }
    };
    let cmd = match name.to_ascii_lowercase().as_str() {
        "/help" | "/h" | "/?" => no_args("/help", Command::Help)?,
        "/reset" => no_args("/reset", Command::Reset)?,
        "/retry" => no_args("/retry", Command::Retry)?,
        "/continue" | "/cont" => no_args("/continue", Command::Continue)?,
        "/undo" => no_args("/undo", Command::Undo)?,
        // `!` cannot be part of a session name, so `/save one!` is
        // unambiguous: save over whatever `one` holds.
        "/save" => {
            let name = one_name("/save")?;
            match name.strip_suffix('!') {
                Some("") => {
                    return Err(ChatError::Usage {
                        command: "/save",
                        message: "give one session name, as in `/save mychat`".into(),
                    })
                }
                Some(n) => Command::SaveOver(n.to_string()),
                None => Command::Save(name),
            }
        }
        "/load" => Command::Load(one_name("/load")?),
        "/sessions" => no_args("/sessions", Command::Sessions)?,
        "/show" => no_args("/show", Command::Show)?,
        "/quit" | "/exit" | "/q" => no_args("/quit", Command::Quit)?,
        "/think" => match Think::parse(args) {
            Some(t @ (Think::On | Think::Off)) => Command::Think(t),
            _ => {
                return Err(ChatError::Usage {
                    command: "/think",
                    message: "write `/think on` or `/think off`".into(),
                })
            }
        },
        "/set" => Command::Set(parse_assignments(args)?),
        _ => return Err(ChatError::UnknownCommand(name.to_string())),
    };
    Ok(Input::Command(cmd))
}

/// `temperature=0.8 top_p=0.5` (spaces around `=` allowed) into pairs.
fn parse_assignments(args: &str) -> Result<Vec<(String, String)>> {
    let usage = |message: String| ChatError::Usage {
        command: "/set",
        message,
    };
    // Glue `key = value` back into `key=value` before splitting on spaces.
    let glued = args.split('=').map(str::trim).collect::<Vec<_>>().join("=");
    let mut out = Vec::new();
    for part in glued.split_whitespace() {
        match part.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() && !v.contains('=') => {
                out.push((k.to_ascii_lowercase(), v.to_string()))
            }
            _ => {
                return Err(usage(format!(
                    "`{part}` is not KEY=VALUE; write e.g. `/set temperature=0.8 top_p=0.5`"
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(usage(
            "give KEY=VALUE pairs, e.g. `/set temperature=0.8 top_p=0.5` (/show lists the settings)"
                .into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Command {
        match parse_input(s).unwrap() {
            Input::Command(c) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(cmd("/help"), Command::Help);
        assert_eq!(cmd("  /reset "), Command::Reset);
        assert_eq!(cmd("/retry"), Command::Retry);
        assert_eq!(cmd("/continue"), Command::Continue);
        assert_eq!(cmd("/undo"), Command::Undo);
        assert_eq!(cmd("/save my-chat.1"), Command::Save("my-chat.1".into()));
        assert_eq!(cmd("/save one!"), Command::SaveOver("one".into()));
        assert_eq!(cmd("/load x"), Command::Load("x".into()));
        assert_eq!(cmd("/sessions"), Command::Sessions);
        assert_eq!(cmd("/show"), Command::Show);
        assert_eq!(cmd("/think on"), Command::Think(Think::On));
        assert_eq!(cmd("/think OFF"), Command::Think(Think::Off));
        assert_eq!(cmd("/quit"), Command::Quit);
        assert_eq!(cmd("/exit"), Command::Quit);
        assert_eq!(
            cmd("/set temperature=0.8 top_p = 0.5"),
            Command::Set(vec![
                ("temperature".into(), "0.8".into()),
                ("top_p".into(), "0.5".into())
            ])
        );
    }

    #[test]
    fn messages_and_mistakes() {
        assert_eq!(parse_input("   ").unwrap(), Input::Empty);
        assert_eq!(
            parse_input("hi /x").unwrap(),
            Input::Message("hi /x".into())
        );
        assert_eq!(
            parse_input("//etc is a folder").unwrap(),
            Input::Message("/etc is a folder".into())
        );
        for bad in [
            "/bogus",
            "/save",
            "/save a b",
            "/save !",
            "/save one !",
            "/set",
            "/set temperature",
            "/set =3",
            "/think maybe",
            "/undo 2",
        ] {
            let e = parse_input(bad).unwrap_err().to_string();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(parse_input("/bogus")
            .unwrap_err()
            .to_string()
            .contains("/help"));
        assert!(help_text().contains("/think on|off"));
        assert!(help_text().contains("/save NAME[!]"));
    }
}
