//! A small multi-line text field: the chat input box, the guidance box and
//! the name prompts. Kept separate from the widgets so the editing rules
//! can be tested without a terminal.

use unicode_width::UnicodeWidthStr;

/// Text plus a cursor (a byte offset that is always on a char boundary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextInput {
    text: String,
    cursor: usize,
}

impl TextInput {
    /// A field holding `text`, cursor at the end.
    pub fn with_text(text: &str) -> Self {
        TextInput {
            text: text.to_string(),
            cursor: text.len(),
        }
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
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if let Some((i, _)) = self.text[..self.cursor].char_indices().next_back() {
            self.text.remove(i);
            self.cursor = i;
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.cursor < self.text.len() {
            self.text.remove(self.cursor);
        }
    }

    /// Moves one character left.
    pub fn left(&mut self) {
        if let Some((i, _)) = self.text[..self.cursor].char_indices().next_back() {
            self.cursor = i;
        }
    }

    /// Moves one character right.
    pub fn right(&mut self) {
        if let Some(c) = self.text[self.cursor..].chars().next() {
            self.cursor += c.len_utf8();
        }
    }

    /// Moves to the start of the current line.
    pub fn home(&mut self) {
        self.cursor = self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1);
    }

    /// Moves to the end of the current line.
    pub fn end(&mut self) {
        self.cursor += self.text[self.cursor..]
            .find('\n')
            .unwrap_or(self.text.len() - self.cursor);
    }

    /// Empties the field and returns what it held.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
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
}
