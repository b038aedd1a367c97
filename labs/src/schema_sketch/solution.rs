//! The reference transfer: decide on loaded state, then append both sides in one transaction,
//! the debit only if the sender's stream is still at the version the decision was made on.

use tokio_postgres::Client;

use super::bank::{self, BankError, TransferOutcome, TransferRequest};
use crate::store::{self, ExpectedVersion};

/// A conflict means another writer moved first; after this many, the account is too busy.
pub const MAX_ATTEMPTS: u32 = 20;

/// How long to wait before attempt `attempt` + 1: a few milliseconds, doubling, with jitter from
/// the transfer id, so two handlers that keep colliding stop retrying in lockstep.
fn backoff(request: &TransferRequest, attempt: u32) -> std::time::Duration {
    let ceiling_ms = 1u64 << attempt.min(7);
    let jitter =
        (request.transfer_id.as_u128() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(attempt) % ceiling_ms;
    std::time::Duration::from_millis(1 + jitter)
}

pub async fn transfer(client: &mut Client, request: &TransferRequest) -> Result<TransferOutcome, BankError> {
    for attempt in 1..=MAX_ATTEMPTS {
        let from = bank::load(client, &request.from).await?;
        let to = bank::load(client, &request.to).await?;
        if let Some(reason) = bank::check_transfer(&from, &to, request) {
            return Ok(TransferOutcome::Rejected { reason });
        }
        let (debit, credit) = bank::transfer_events(request);
        // Both appends in one transaction: both sides are written, or neither is.
        let tx = client.transaction().await?;
        // Each append locks its stream until commit. Two opposite transfers that lock in
        // opposite orders would deadlock, so every transfer appends in stream-id order.
        let debit_first = bank::stream_of(&request.from) < bank::stream_of(&request.to);
        let mut to_version = 0;
        if !debit_first {
            to_version = credit_to(&tx, request, &credit).await?;
        }
        // The overdraft rule read `from` at this version: the debit is valid only there.
        let from_version =
            match store::append(&tx, &bank::stream_of(&request.from), ExpectedVersion::Exact(from.version), &[debit])
                .await
            {
                Ok(version) => version,
                // Roll back, wait a moment, load again and decide again.
                Err(e) if e.is_conflict() => {
                    drop(tx);
                    tokio::time::sleep(backoff(request, attempt)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
        if debit_first {
            to_version = credit_to(&tx, request, &credit).await?;
        }
        tx.commit().await?;
        return Ok(TransferOutcome::Done { from_version, to_version, attempts: attempt });
    }
    Err(BankError::TooManyConflicts(request.transfer_id, MAX_ATTEMPTS))
}

/// Crediting does not depend on the receiver's balance: no version to protect, so any.
async fn credit_to(
    tx: &tokio_postgres::Transaction<'_>,
    request: &TransferRequest,
    credit: &store::NewEvent,
) -> Result<i64, BankError> {
    Ok(store::append(tx, &bank::stream_of(&request.to), ExpectedVersion::Any, std::slice::from_ref(credit)).await?)
}
