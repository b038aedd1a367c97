//! YOUR FILE for activity 3. `cargo labs check schema-sketch` runs it against a real server.
//!
//! `transfer` moves money from one account to another. As written it looks right and passes
//! every test you would write by calling it once: it loads both accounts, checks the overdraft
//! rule, and writes the debit and the credit. Under concurrency it overdraws accounts. The check
//! shows you how, every time.
//!
//! Make it safe:
//! - Hint 1: the overdraft rule was checked against `from.version`. What should the append say
//!   about that version? (`ExpectedVersion`, in labs/src/store/mod.rs.)
//! - Hint 2: if the debit is written and the credit fails, money disappears. What makes two
//!   appends commit together? (`client.transaction()`; `store::append` takes a transaction.)
//! - Hint 3: a version conflict is not a failure of the transfer: someone else moved first.
//!   Load again and decide again (`StoreError::is_conflict`), a bounded number of times.
//! - Hint 4: each append holds its stream's lock until commit. Two opposite transfers in one
//!   transaction each would lock alice then bob, and bob then alice: "deadlock detected".
//!   Append to the two streams in a fixed order (by stream id).

use tokio_postgres::Client;

use super::bank::{self, BankError, TransferOutcome, TransferRequest};
use crate::store::{self, ExpectedVersion};

pub async fn transfer(client: &mut Client, request: &TransferRequest) -> Result<TransferOutcome, BankError> {
    let from = bank::load(client, &request.from).await?;
    let to = bank::load(client, &request.to).await?;
    if let Some(reason) = bank::check_transfer(&from, &to, request) {
        return Ok(TransferOutcome::Rejected { reason });
    }
    let (debit, credit) = bank::transfer_events(request);
    let from_version = store::append(client, &bank::stream_of(&request.from), ExpectedVersion::Any, &[debit]).await?;
    let to_version = store::append(client, &bank::stream_of(&request.to), ExpectedVersion::Any, &[credit]).await?;
    Ok(TransferOutcome::Done { from_version, to_version, attempts: 1 })
}
