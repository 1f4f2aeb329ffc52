//! `keyflow schemas check|register`: the schema catalogue against itself and a registry.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Subcommand};

use crate::serde::catalogue::{self, Family};
use crate::serde::compat::{self, Level};
use crate::serde::{Registry, RegistryConfig, SubjectStrategy};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check each schema version against the previous ones, and (with --registry) against the
    /// registered subject under its configured level. Exits 1 on any incompatibility.
    Check(Args),
    /// Register every version of every schema, oldest first. Exits 1 if the registry refuses one.
    Register(Args),
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The schema catalogue.
    #[arg(long, default_value = "schemas")]
    dir: PathBuf,
    /// Compatibility level for the offline check between local versions.
    #[arg(long, default_value = "BACKWARD")]
    level: Level,
    /// Schema registry URL (`http(s)://...` or `mock://<scope>`).
    #[arg(long, env = "KEYFLOW_SCHEMA_REGISTRY_URL")]
    registry: Option<String>,
    /// Subject name strategy: topic, record, topic-record.
    #[arg(long, default_value = "record")]
    subject_strategy: SubjectStrategy,
    /// The topic, for the topic and topic-record strategies.
    #[arg(long)]
    topic: Option<String>,
    /// `user:password` for basic auth.
    #[arg(long, env = "KEYFLOW_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", hide_env_values = true)]
    basic_auth: Option<String>,
    /// Bearer token.
    #[arg(long, env = "KEYFLOW_SCHEMA_REGISTRY_BEARER_AUTH_TOKEN", hide_env_values = true)]
    bearer_token: Option<String>,
}

impl Args {
    fn registry(&self) -> anyhow::Result<Option<std::sync::Arc<Registry>>> {
        let Some(url) = &self.registry else { return Ok(None) };
        Ok(Some(Registry::new(&RegistryConfig {
            url: url.clone(),
            basic_auth_user_info: self.basic_auth.clone(),
            bearer_auth_token: self.bearer_token.clone(),
        })?))
    }

    fn subject(&self, family: &Family) -> anyhow::Result<String> {
        let latest = &family.versions.last().expect("families have versions").schema;
        let topic = match (self.subject_strategy, &self.topic) {
            (SubjectStrategy::RecordName, _) => String::new(),
            (_, Some(t)) => t.clone(),
            (_, None) => anyhow::bail!("--topic is needed with the {:?} strategy", self.subject_strategy),
        };
        Ok(self.subject_strategy.subject(&topic, false, latest))
    }
}

pub fn run(c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Check(a) => check(&a),
        Command::Register(a) => register(&a),
    }
}

fn check(a: &Args) -> anyhow::Result<ExitCode> {
    let families = catalogue::load(&a.dir)?;
    let registry = a.registry()?;
    let mut failures = 0;
    for f in &families {
        println!("{} ({} version{})", f.full_name, f.versions.len(), if f.versions.len() == 1 { "" } else { "s" });
        for (i, v) in f.versions.iter().enumerate().skip(1) {
            let previous: Vec<_> = f.versions[..i].iter().map(|p| p.schema.clone()).collect();
            let violations = compat::check(a.level, &v.schema, &previous);
            if violations.is_empty() {
                println!("  v{} against earlier versions ({}, offline): compatible", v.number, a.level);
            }
            for violation in violations {
                failures += 1;
                println!("  v{} INCOMPATIBLE ({}, offline) {violation}", v.number, a.level);
            }
        }
        if let Some(r) = &registry {
            let subject = a.subject(f)?;
            let latest = f.versions.last().expect("families have versions");
            let (level, reasons) = r.check(&subject, &latest.schema)?;
            if reasons.is_empty() {
                println!("  v{} against registry subject `{subject}` ({level}): compatible", latest.number);
            }
            for reason in reasons {
                failures += 1;
                println!("  v{} INCOMPATIBLE with registry subject `{subject}` ({level}): {reason}", latest.number);
            }
        }
    }
    println!("{} schema families, {failures} incompatibilities", families.len());
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn register(a: &Args) -> anyhow::Result<ExitCode> {
    let families = catalogue::load(&a.dir)?;
    let registry = a.registry()?.ok_or_else(|| anyhow::anyhow!("--registry is required"))?;
    let mut failures = 0;
    for f in &families {
        let subject = a.subject(f)?;
        for v in &f.versions {
            match registry.register(&subject, &v.schema) {
                Ok(id) => println!("{subject} v{}: id {id}", v.number),
                Err(e) => {
                    failures += 1;
                    println!("{subject} v{}: REFUSED: {e}", v.number);
                }
            }
        }
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
