//! The engine thread (placeholder until the chat and writer libraries land).

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::protocol::{Request, Response};

/// How the engine is set up.
pub struct EngineConfig {}

impl EngineConfig {
    /// Whether Write mode has a prompt file.
    pub fn write_enabled(&self) -> bool {
        false
    }
}

/// Starts the engine thread.
pub fn spawn(
    _config: EngineConfig,
    _cancel: Arc<AtomicBool>,
    _emit: impl Fn(Response) + Send + 'static,
) -> anyhow::Result<(Sender<Request>, JoinHandle<()>)> {
    anyhow::bail!("not yet")
}
