//! What operators do to a running application, as library functions the CLI wraps (and tests
//! call): dead-letter inspection and redrive, replay for recovery.

pub mod dlq;
pub mod replay;
