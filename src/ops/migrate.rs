//! Workflow migration as an operation (`keyflow workflow migrate`, the console's
//! `POST /api/workflows/migrate`): read the instances from their changelog, plan with
//! `workflow::migration::plan`, send one control record per instance in one transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use serde::Deserialize;

use crate::kafka::Clients;
use crate::workflow::migration::{self, Plan, Selection};
use crate::workflow::{Instance, Versions};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A migration as an operator asks for it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// The target version; default the newest.
    pub to: Option<u32>,
    /// Only instances on this version (default: every version but the target).
    pub from: Option<u32>,
    #[serde(default)]
    pub states: Vec<String>,
    #[serde(default)]
    pub ids: Vec<String>,
    /// Source state -> target state.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// Names the migration; the same name again changes nothing. Default `m<ms now>`.
    pub name: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// What a migration did or would do.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub to: u32,
    pub plan: Plan,
    /// The commands were sent (not a dry run, and something to move).
    pub sent: bool,
}

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be carried out as asked (an incomplete mapping, an unknown version):
    /// nothing was moved.
    #[error("refused: {0}; nothing was moved")]
    Refused(String),
    #[error("{0}")]
    Kafka(String),
}

/// Plans `request` against the instances in the changelog now and, unless it is a dry run,
/// sends its commands.
///
/// # Errors
/// [`Error::Refused`] for a request that cannot be carried out; [`Error::Kafka`] when the
/// cluster cannot be read or written (then nothing was sent: the commands go in one transaction).
pub fn migrate(kafka: &Clients, application_id: &str, versions: &Versions, request: Request) -> Result<Outcome, Error> {
    let to = request.to.unwrap_or(versions.newest().version);
    let name = request.name.clone().unwrap_or_else(|| format!("m{}", crate::runtime::now_ms()));
    let all = instances(kafka, application_id, versions)?;
    let select = Selection { from_version: request.from, states: request.states, ids: request.ids };
    let mut plan = migration::plan(versions, &all, &select, to, &request.mapping, &name).map_err(Error::Refused)?;
    for (_, _, m) in &mut plan.commands {
        m.application = Some(application_id.to_owned());
    }
    let sent = !request.dry_run && !plan.commands.is_empty();
    if sent {
        send(kafka, application_id, versions, &plan.commands)?;
    }
    Ok(Outcome { name, to, plan, sent })
}

/// Every instance of `versions`' workflow in the `instances` changelog as of now, with its
/// partition (that of its events too: a task owns partition p of every input and changelog).
/// Each is kept as a plan needs it: where it is (version, state, finished), not how it got there
/// (history, variables and bookkeeping are left out as the changelog is read), so a changelog of
/// millions of instances with long histories is planned in a few hundred bytes per instance.
///
/// # Errors
/// The changelog cannot be read.
pub fn instances(kafka: &Clients, application_id: &str, versions: &Versions) -> Result<Vec<(i32, Instance)>, Error> {
    let topic = crate::state::changelog_topic(application_id, crate::workflow::STORE);
    // As a restore reads it: the last value per key, nothing before a partition's reset marker
    // (`replay --wipe-state`), and keyflow's own markers (keys from 0xff, never UTF-8) left out.
    // Deleted keys and other workflows' instances are not kept; `None`: a value this keyflow
    // cannot read.
    let mut latest: BTreeMap<Vec<u8>, (i32, Option<Instance>)> = BTreeMap::new();
    crate::kafka::read::read_each(kafka.clone(), &topic, TIMEOUT, |m| {
        let Some(k) = m.key else { return };
        if k == crate::state::RESET_KEY {
            latest.retain(|_, (p, _)| *p != m.partition);
        } else if k.first() != Some(&0xff) {
            match m.value.as_deref().map(serde_json::from_slice::<Instance>) {
                Some(Ok(i)) if i.workflow == versions.name() => latest.insert(k, (m.partition, Some(summary(i)))),
                Some(Err(_)) => latest.insert(k, (m.partition, None)),
                _ => latest.remove(&k),
            };
        }
    })
    .map_err(|e| Error::Kafka(format!("reading {topic}: {e}")))?;
    let mut out = Vec::new();
    let mut unreadable = 0;
    for (_, (partition, value)) in latest {
        match value {
            Some(i) => out.push((partition, i)),
            None => unreadable += 1,
        }
    }
    if unreadable > 0 {
        tracing::warn!(topic, unreadable, "stored values that are not instances this keyflow can read; left out");
    }
    Ok(out)
}

/// Where an instance is, without how it got there.
fn summary(i: Instance) -> Instance {
    Instance {
        id: i.id,
        workflow: i.workflow,
        version: i.version,
        state: i.state,
        run: i.run,
        step: i.step,
        finished: i.finished,
        ..Instance::default()
    }
}

/// The commands, in one transaction: all are sent or none. They go to an input every version
/// reads, so every member of the group has it in its subscription.
fn send(kafka: &Clients, application_id: &str, versions: &Versions, commands: &[(i32, String, migration::Migration)]) -> Result<(), Error> {
    let newest = versions.newest();
    let topic = newest
        .inputs
        .iter()
        .map(|i| &i.get_ref().topic)
        .find(|t| versions.all().all(|d| d.inputs.iter().any(|i| i.get_ref().topic == **t)))
        .ok_or_else(|| Error::Refused("no input topic is read by every version, so no topic reaches every member".into()))?;
    fn k(what: &str) -> impl Fn(rdkafka::error::KafkaError) -> Error + '_ {
        move |e| Error::Kafka(format!("{what}: {e}"))
    }
    let producer: BaseProducer = kafka.transactional_producer(&format!("{application_id}-migrate")).create().map_err(k("producer"))?;
    producer.init_transactions(TIMEOUT).map_err(k("init transactions"))?;
    producer.begin_transaction().map_err(k("begin transaction"))?;
    for (partition, key, m) in commands {
        let value = serde_json::to_vec(m).expect("a migration serializes");
        let headers = OwnedHeaders::new().insert(Header { key: crate::record::CONTROL_HEADER, value: Some(migration::CONTROL) });
        let record = BaseRecord::<str, [u8]>::to(topic).partition(*partition).key(key.as_str()).payload(&value).headers(headers);
        crate::kafka::send_waiting(&producer, record).map_err(|e| Error::Kafka(format!("sending to {topic}: {e}")))?;
    }
    producer.commit_transaction(TIMEOUT).map_err(k("commit"))
}
