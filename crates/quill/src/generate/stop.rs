//! Stop strings that may span tokens. Text is held back while it could still be the start of a
//! stop string, so no part of a stop string ever reaches the output.

/// Watches generated text for stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Adds newly decoded text. Returns the text that is now safe to emit and, if a stop string
    /// appeared, its index (everything from the stop string on is discarded).
    pub fn push(&mut self, text: &str) -> (String, Option<usize>) {
        self.held.push_str(text);
        if let Some((pos, which)) = self.earliest_match() {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return (out, Some(which));
        }
        let keep_from = self.partial_start();
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        (out, None)
    }

    /// Ends the text: whatever was held back is emitted (it did not become a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The earliest (position, stop index) of a complete stop string in the held text.
    fn earliest_match(&self) -> Option<(usize, usize)> {
        self.stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|p| (p, i)))
            .min()
    }

    /// The first char boundary from which the held text is a proper prefix of a stop string.
    fn partial_start(&self) -> usize {
        for (i, _) in self.held.char_indices() {
            let tail = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                return i;
            }
        }
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (text, hit) = m.push(p);
            out.push_str(&text);
            if hit.is_some() {
                return (out, hit);
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn stop_string_split_across_pieces_never_leaks() {
        let mut m = StopMatcher::new(vec!["\n\nUser:".into()]);
        assert_eq!(m.push("Hello"), ("Hello".into(), None));
        assert_eq!(
            m.push(" there\n"),
            (" there".into(), None),
            "'\\n' held back"
        );
        assert_eq!(m.push("\nUs"), ("".into(), None));
        assert_eq!(m.push("er: hi"), ("".into(), Some(0)));
    }

    #[test]
    fn false_start_is_released() {
        assert_eq!(run(&["STOP"], &["ST", "OP!"]), ("".into(), Some(0)));
        assert_eq!(run(&["STOP"], &["ST", "ART"]), ("START".into(), None));
        assert_eq!(run(&["STOP"], &["x S", "T"]), ("x ST".into(), None));
    }

    #[test]
    fn earliest_of_several_stops_wins_and_multibyte_text_is_cut_on_boundaries() {
        assert_eq!(
            run(&["世界", "。"], &["你好", "，世", "界。"]),
            ("你好，".into(), Some(0))
        );
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".into(), Some(1)));
        assert_eq!(run(&["🦀🦀"], &["a🦀", "b"]), ("a🦀b".into(), None));
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        assert_eq!(run(&[""], &["abc"]), ("abc".into(), None));
    }
}
