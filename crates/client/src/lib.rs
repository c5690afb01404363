//! `syncbase-client`: the client side of Syncbase. A [`Client`] wraps any
//! [`Handler`](syncbase_wire::Handler) — a connection to a daemon, or an in-process service — so
//! an app is written once for both. The `sb` binary is built on it; [`escape`] and
//! [`unescape`] define its plain output format.
//!
//! It depends on `syncbase-wire` and `syncbase-net`, never on `syncbase-server`.

mod escape;

use std::sync::Arc;

use syncbase_net::{Identity, NetError};
use syncbase_wire::{
    BatchHandle, BatchOptions, DatabasePath, Handler, Request, Response, Responses, WireError,
    codes,
};

pub use escape::{UnescapeError, escape, unescape};

/// How many times [`Client::run_in_batch`] retries a batch that met a concurrent one.
pub const BATCH_ATTEMPTS_MAX: usize = 100;

/// A Syncbase client over any handler.
#[derive(Clone)]
pub struct Client {
    handler: Arc<dyn Handler>,
}

impl Client {
    /// A client over `handler`.
    pub fn new(handler: Arc<dyn Handler>) -> Self {
        Self { handler }
    }

    /// Connects to the daemon at `address` as `identity`.
    pub async fn connect(address: &str, identity: &Identity) -> Result<Client, NetError> {
        let connection = syncbase_net::connect(address, identity).await?;
        Ok(Client::new(Arc::new(connection)))
    }

    /// Runs a call and returns its stream of responses.
    pub async fn call(&self, request: Request) -> Result<Responses, WireError> {
        self.handler.call(request).await
    }

    /// Runs a call that has one response.
    pub async fn call_one(&self, request: Request) -> Result<Response, WireError> {
        self.handler.call(request).await?.one().await
    }

    /// Creates a syncgroup of `database` (the service is its first member).
    pub async fn create_syncgroup(
        &self,
        database: &DatabasePath,
        spec: syncbase_wire::SyncgroupSpec,
    ) -> Result<(), WireError> {
        self.call_one(Request::CreateSyncgroup {
            database: database.clone(),
            spec,
        })
        .await
        .map(drop)
    }

    /// Joins the syncgroup `name` of `database` through the member at `via`; with `wait`,
    /// returns once the first round with that member has been applied.
    pub async fn join_syncgroup(
        &self,
        database: &DatabasePath,
        name: &str,
        via: &str,
        wait: bool,
    ) -> Result<(), WireError> {
        self.join_syncgroup_reporting(database, name, via, wait, &mut |_| {})
            .await
    }

    /// [`Self::join_syncgroup`], telling `progress` how the first round goes while it waits
    /// (about every quarter second).
    pub async fn join_syncgroup_reporting(
        &self,
        database: &DatabasePath,
        name: &str,
        via: &str,
        wait: bool,
        progress: &mut (dyn FnMut(syncbase_wire::JoinProgress) + Send),
    ) -> Result<(), WireError> {
        let mut responses = self
            .call(Request::JoinSyncgroup {
                database: database.clone(),
                name: name.to_string(),
                via: via.to_string(),
                wait,
            })
            .await?;
        while let Some(response) = responses.next().await {
            match response? {
                Response::JoinProgress(report) => progress(report),
                Response::Done => return Ok(()),
                _ => break,
            }
        }
        Err(WireError::new(
            codes::INTERNAL,
            "the service answered a join with something else",
        ))
    }

    /// Pulls from every other member of `database`'s syncgroups now; one report per member,
    /// once each round has been applied or has failed.
    pub async fn sync_now(
        &self,
        database: &DatabasePath,
    ) -> Result<Vec<syncbase_wire::PullReport>, WireError> {
        match self
            .call_one(Request::SyncNow {
                database: database.clone(),
            })
            .await?
        {
            Response::Pulled(reports) => Ok(reports),
            _ => Err(WireError::new(
                codes::INTERNAL,
                "the service answered a sync-now with something else",
            )),
        }
    }

    /// The names of `database`'s syncgroups.
    pub async fn list_syncgroups(&self, database: &DatabasePath) -> Result<Vec<String>, WireError> {
        match self
            .call_one(Request::ListSyncgroups {
                database: database.clone(),
            })
            .await?
        {
            Response::Names(names) => Ok(names),
            _ => Err(WireError::new(
                syncbase_wire::codes::INTERNAL,
                "the service answered a list of syncgroups with something else",
            )),
        }
    }

    /// Runs `body` in a read-write batch and commits it, starting over (up to
    /// [`BATCH_ATTEMPTS_MAX`] times) while the commit meets a concurrent batch.
    pub async fn run_in_batch<T, F, Fut>(
        &self,
        database: &DatabasePath,
        mut body: F,
    ) -> Result<T, WireError>
    where
        F: FnMut(BatchHandle) -> Fut,
        Fut: std::future::Future<Output = Result<T, WireError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Response::Batch(batch) = self
                .call_one(Request::BeginBatch {
                    database: database.clone(),
                    options: BatchOptions::default(),
                })
                .await?
            else {
                return Err(WireError::new(
                    codes::BAD_MESSAGE,
                    "BeginBatch did not return a batch",
                ));
            };
            let value = match body(batch).await {
                Ok(value) => value,
                Err(error) => {
                    let _ = self
                        .call_one(Request::Abort {
                            database: database.clone(),
                            batch,
                        })
                        .await;
                    return Err(error);
                }
            };
            match self
                .call_one(Request::Commit {
                    database: database.clone(),
                    batch,
                })
                .await
            {
                Ok(_) => return Ok(value),
                Err(error) if error.is(codes::CONCURRENT_BATCH) && attempt < BATCH_ATTEMPTS_MAX => {
                }
                Err(error) => return Err(error),
            }
        }
    }
}
