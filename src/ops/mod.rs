//! What operators do to a running application, as library functions the CLI wraps (and tests
//! call): dead-letter inspection and redrive, replay for recovery, workflow migration.

pub mod dlq;
pub mod migrate;
pub mod replay;
