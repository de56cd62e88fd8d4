//! The default model compiled into quill (placeholder until the trained fixture lands).

use super::Parsed;
use crate::error::{Error, Result};

pub(super) fn parse() -> Result<Parsed> {
    Err(Error::Request("the embedded model is not built yet".into()))
}
