//! The chat prompt format of RWKV World and G1 models (and Raven's for
//! RWKV-4): `User: {message}\n\nAssistant: {reply}\n\n`, one turn after
//! another. `\n\n` means "end of turn" to these models, so it must never
//! appear inside a message: [`normalize_message`] makes sure of that.

use crate::model::RwkvVersion;

/// G1 reasoning control: what follows `Assistant:` in the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Think {
    /// Plain `Assistant:` (World, Raven and G1 models left to choose).
    Auto,
    /// `Assistant: <think`: a G1 model reasons before it answers.
    On,
    /// `Assistant: <think>\n</think`: an empty reasoning block, so a G1
    /// model answers at once.
    Off,
}

impl Think {
    /// `auto`, `on` or `off` (as `/show` prints and snapshots store it).
    pub fn as_str(self) -> &'static str {
        match self {
            Think::Auto => "auto",
            Think::On => "on",
            Think::Off => "off",
        }
    }

    /// Parses [`Think::as_str`]'s spellings (and true/false, yes/no).
    pub fn parse(s: &str) -> Option<Think> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Think::Auto),
            "on" | "true" | "yes" | "1" => Some(Think::On),
            "off" | "false" | "no" | "0" => Some(Think::Off),
            _ => None,
        }
    }

    /// What the prompt puts after `Assistant:`. The reply's leading space
    /// is part of the tag here, as the official G1 demo writes it.
    pub fn reply_prefix(self) -> &'static str {
        match self {
            Think::Auto => "",
            Think::On => " <think",
            Think::Off => " <think>\n</think",
        }
    }
}

/// Who speaks in a chat and how replies start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatFormat {
    /// The user's name in the prompt (`User`, Raven's `Bob`).
    pub user: String,
    /// The assistant's name in the prompt (`Assistant`, Raven's `Alice`).
    pub assistant: String,
    /// G1 reasoning control.
    pub think: Think,
}

impl ChatFormat {
    /// The names a model was trained with: `Bob`/`Alice` for RWKV-4
    /// (Raven), `User`/`Assistant` for World and G1 models.
    pub fn for_model(version: RwkvVersion) -> ChatFormat {
        let (user, assistant) = match version {
            RwkvVersion::V4 => ("Bob", "Alice"),
            _ => ("User", "Assistant"),
        };
        ChatFormat {
            user: user.into(),
            assistant: assistant.into(),
            think: Think::Auto,
        }
    }

    /// The prompt for one user message, ending where the reply starts:
    /// `User: {msg}\n\nAssistant:` (plus the think tag). When the state
    /// has already consumed `User:` (a reply stopped at `\n\nUser:`), only
    /// the rest is fed, so the model never sees the name twice.
    pub fn user_turn(&self, message: &str, user_tag_consumed: bool) -> String {
        let head = if user_tag_consumed {
            String::new()
        } else {
            format!("{}:", self.user)
        };
        format!(
            "{head} {message}\n\n{}:{}",
            self.assistant,
            self.think.reply_prefix()
        )
    }

    /// One finished exchange, as the persona's opening conversation holds
    /// it: `User: {user}\n\nAssistant: {reply}\n\n`.
    pub fn exchange(&self, user: &str, reply: &str) -> String {
        format!("{}: {user}\n\n{}: {reply}\n\n", self.user, self.assistant)
    }

    /// Stop strings for a reply. `\n\n{user}:` is the sure sign of a turn
    /// ended; bare `\n\n` is the usual one, but a G1 model may put blank
    /// lines inside its reasoning, so with a think tag only the former ends
    /// the reply.
    pub fn stops(&self) -> Vec<String> {
        let mut v = vec![format!("\n\n{}:", self.user)];
        if self.think == Think::Auto {
            v.push("\n\n".into());
        }
        v
    }

    /// A filter that turns raw reply text into what the user should see.
    pub fn reply_filter(&self) -> ReplyFilter {
        ReplyFilter::new(self.think)
    }
}

/// Normalises a message for the prompt: `\r\n` and `\r` become `\n`, each
/// line loses trailing spaces, runs of blank lines collapse to a single
/// `\n` (a blank line would read as the end of the turn) and the whole is
/// trimmed.
pub fn normalize_message(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text
        .split('\n')
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("\n").trim().to_string()
}

/// Cleans streamed reply text for display: the prompt ends with
/// `Assistant:`, so a reply starts with a space (or, after a think tag,
/// with the tag's closing `>`); the user should see neither. With
/// [`Think::On`] the opening `<think` that the prompt supplied is shown, so
/// the reasoning reads as a block.
#[derive(Debug, Clone)]
pub struct ReplyFilter {
    think: Think,
    started: bool,
}

impl ReplyFilter {
    /// A filter for a reply that starts now.
    pub fn new(think: Think) -> Self {
        ReplyFilter {
            think,
            started: false,
        }
    }

    /// A filter for text that continues a reply already under way (no
    /// stripping left to do).
    pub fn continuing() -> Self {
        ReplyFilter {
            think: Think::Auto,
            started: true,
        }
    }

    /// Returns the part of `piece` to show.
    pub fn push(&mut self, piece: &str) -> String {
        if self.started {
            return piece.to_string();
        }
        match self.think {
            Think::On => {
                self.started = true;
                format!("<think{piece}")
            }
            Think::Auto | Think::Off => {
                // After `</think` the model writes `>` before its answer.
                let mut rest = piece.trim_start();
                if self.think == Think::Off {
                    if let Some(r) = rest.strip_prefix('>') {
                        self.think = Think::Auto;
                        rest = r.trim_start();
                    }
                }
                if rest.is_empty() {
                    return String::new();
                }
                self.started = true;
                rest.to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_messages() {
        assert_eq!(normalize_message("  hi  "), "hi");
        assert_eq!(normalize_message("a\r\nb"), "a\nb");
        assert_eq!(normalize_message("a\n\n\n  \nb\n\nc"), "a\nb\nc");
        assert_eq!(normalize_message("a\r\n\r\nb\r"), "a\nb");
        assert_eq!(normalize_message("\n\n  \n"), "");
        assert!(!normalize_message("x\n \n\t\ny").contains("\n\n"));
    }

    #[test]
    fn world_g1_and_raven_turns() {
        let mut f = ChatFormat::for_model(RwkvVersion::V7);
        assert_eq!(f.user_turn("hi", false), "User: hi\n\nAssistant:");
        assert_eq!(f.user_turn("hi", true), " hi\n\nAssistant:");
        assert_eq!(f.stops(), vec!["\n\nUser:".to_string(), "\n\n".into()]);
        f.think = Think::On;
        assert_eq!(f.user_turn("hi", false), "User: hi\n\nAssistant: <think");
        assert_eq!(f.stops(), vec!["\n\nUser:".to_string()]);
        f.think = Think::Off;
        assert_eq!(
            f.user_turn("hi", false),
            "User: hi\n\nAssistant: <think>\n</think"
        );
        let r = ChatFormat::for_model(RwkvVersion::V4);
        assert_eq!(r.user_turn("yo", false), "Bob: yo\n\nAlice:");
        assert_eq!(r.exchange("a", "b"), "Bob: a\n\nAlice: b\n\n");
    }

    #[test]
    fn reply_filter_strips_what_the_prompt_implies() {
        let mut f = ReplyFilter::new(Think::Auto);
        assert_eq!(f.push(" "), "");
        assert_eq!(f.push(" Hello"), "Hello");
        assert_eq!(f.push(" world"), " world");
        let mut f = ReplyFilter::new(Think::Off);
        assert_eq!(f.push(">"), "");
        assert_eq!(f.push("\nAnswer"), "Answer");
        let mut f = ReplyFilter::new(Think::On);
        assert_eq!(f.push(">\nhmm"), "<think>\nhmm");
        assert_eq!(Think::parse("ON"), Some(Think::On));
        assert_eq!(Think::parse("maybe"), None);
    }
}
