//! A small multi-line text field: the chat input box, the guidance box and
//! the name prompts. Kept separate from the widgets so the editing rules
//! can be tested without a terminal.

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Text plus a cursor (a byte offset that is always on a grapheme cluster
/// boundary: moving or deleting inside a cluster, between an emoji and its
/// skin tone or a letter and its accent, would split what shows as one
/// character).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextInput {
    text: String,
    cursor: usize,
    /// The whole text is selected: a suggestion (a name, a value) that the
    /// first typed character or deletion replaces, so typing a new one
    /// does not append to it; moving the cursor keeps it for editing.
    selected: bool,
}

impl TextInput {
    /// A field holding `text`, cursor at the end.
    pub fn with_text(text: &str) -> Self {
        TextInput {
            text: text.to_string(),
            cursor: text.len(),
            selected: false,
        }
    }

    /// A field holding `text` selected, cursor at the end: typing
    /// replaces it, a cursor key keeps it.
    pub fn with_selected_text(text: &str) -> Self {
        TextInput {
            selected: !text.is_empty(),
            ..TextInput::with_text(text)
        }
    }

    /// Whether the whole text is selected (see [`TextInput::with_selected_text`]).
    pub fn is_selected(&self) -> bool {
        self.selected
    }

    /// Empties the field.
    pub fn clear(&mut self) {
        self.take();
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the field is empty.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Inserts a character at the cursor. A tab becomes a space and other
    /// control characters are dropped: they would garble the screen.
    pub fn insert(&mut self, c: char) {
        let c = match c {
            '\t' => ' ',
            '\n' => '\n',
            c if c.is_control() => return,
            c => c,
        };
        if self.selected {
            self.clear();
        }
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Deletes the character (grapheme cluster) before the cursor, or the
    /// selected text.
    pub fn backspace(&mut self) {
        if self.selected {
            return self.clear();
        }
        let i = self.prev_boundary();
        self.text.replace_range(i..self.cursor, "");
        self.cursor = i;
    }

    /// Deletes the character (grapheme cluster) under the cursor, or the
    /// selected text.
    pub fn delete(&mut self) {
        if self.selected {
            return self.clear();
        }
        let end = self.next_boundary();
        self.text.replace_range(self.cursor..end, "");
    }

    /// Moves one character (grapheme cluster) left.
    pub fn left(&mut self) {
        self.selected = false;
        self.cursor = self.prev_boundary();
    }

    /// Moves one character (grapheme cluster) right.
    pub fn right(&mut self) {
        self.selected = false;
        self.cursor = self.next_boundary();
    }

    /// Moves to the start of the current line.
    pub fn home(&mut self) {
        self.selected = false;
        self.cursor = self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1);
    }

    /// Moves to the end of the current line.
    pub fn end(&mut self) {
        self.selected = false;
        self.cursor += self.text[self.cursor..]
            .find('\n')
            .unwrap_or(self.text.len() - self.cursor);
    }

    /// Where the grapheme cluster before the cursor starts (the cursor at
    /// the start of the text).
    fn prev_boundary(&self) -> usize {
        self.text[..self.cursor]
            .grapheme_indices(true)
            .next_back()
            .map_or(self.cursor, |(i, _)| i)
    }

    /// Where the grapheme cluster after the cursor ends (the cursor at the
    /// end of the text).
    fn next_boundary(&self) -> usize {
        self.cursor
            + self.text[self.cursor..]
                .graphemes(true)
                .next()
                .map_or(0, str::len)
    }

    /// Empties the field and returns what it held.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        self.selected = false;
        std::mem::take(&mut self.text)
    }

    /// Lines of text (at least one).
    pub fn lines(&self) -> Vec<&str> {
        self.text.split('\n').collect()
    }

    /// The cursor as (line, display column).
    pub fn cursor_line_col(&self) -> (usize, usize) {
        let before = &self.text[..self.cursor];
        let line = before.matches('\n').count();
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[start..].width())
    }
}

#[cfg(test)]
mod tests {
    use super::TextInput;

    #[test]
    fn editing_keeps_the_cursor_on_char_boundaries() {
        let mut t = TextInput::default();
        for c in "héllo".chars() {
            t.insert(c);
        }
        t.left();
        t.left();
        t.left();
        t.backspace(); // removes é
        assert_eq!(t.text(), "hllo");
        t.insert('\n');
        assert_eq!(t.text(), "h\nllo");
        assert_eq!(t.cursor_line_col(), (1, 0));
        t.end();
        assert_eq!(t.cursor_line_col(), (1, 3));
        t.home();
        t.delete();
        assert_eq!(t.text(), "h\nlo");
        t.right();
        t.right();
        t.right();
        assert_eq!(t.cursor_line_col(), (1, 2));
        assert_eq!(t.take(), "h\nlo");
        assert!(t.is_empty());
    }

    fn typed(s: &str) -> TextInput {
        let mut t = TextInput::default();
        for c in s.chars() {
            t.insert(c);
        }
        t
    }

    /// QA's case: `a👍🏽b`, Left twice, `X` gave `a👍X🏽b`.
    #[test]
    fn the_cursor_moves_and_deletes_whole_grapheme_clusters() {
        let mut t = typed("a👍🏽b");
        t.left();
        t.left();
        t.insert('X');
        assert_eq!(t.text(), "aX👍🏽b");
        t.right();
        t.backspace();
        assert_eq!(t.text(), "aXb");
        t.left();
        t.insert('👍');
        t.insert('🏽');
        t.left();
        t.delete();
        assert_eq!(t.text(), "aXb");
        // e + combining acute is one character too.
        let mut t = typed("ce\u{301}d");
        t.left();
        t.left();
        t.insert('X');
        assert_eq!(t.text(), "cXe\u{301}d");
        t.end();
        t.left();
        t.backspace();
        assert_eq!(t.text(), "cXd");
        assert_eq!(t.cursor_line_col(), (0, 2));
    }

    #[test]
    fn a_selected_suggestion_is_replaced_by_typing_and_kept_by_moving() {
        let mut t = TextInput::with_selected_text("story1");
        assert!(t.is_selected());
        t.insert('x');
        assert_eq!(t.text(), "x");
        assert!(!t.is_selected());
        let mut t = TextInput::with_selected_text("story1");
        t.backspace();
        assert!(t.is_empty());
        let mut t = TextInput::with_selected_text("story1");
        t.left();
        t.insert('b');
        assert_eq!(t.text(), "story1".replace('1', "b1"));
        // A dropped control character leaves the selection alone.
        let mut t = TextInput::with_selected_text("v");
        t.insert('\u{7}');
        assert_eq!((t.text(), t.is_selected()), ("v", true));
        assert!(!TextInput::with_selected_text("").is_selected());
    }
}
