//! `docker/compose.yaml` cannot be started here (no Docker engine), so it is checked for what
//! `docker compose config` would catch and for consistency with keyflow itself: every service is
//! well-formed and health-checked, every named volume is declared, every keyflow service's
//! config loads with the environment the file gives it, each instance keeps its state on its own
//! volume at the configured `state.dir`, and the topics the file creates are the workflow's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use keyflow::config::Config;
use keyflow::workflow;
use yaml_rust2::{Yaml, YamlLoader};

fn docker() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/docker"))
}

/// A mapping with its `<<` merge key applied (compose's YAML merge; the parser leaves it as a key).
fn merged(y: &Yaml) -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    if let Some(h) = y.as_hash() {
        if let Some(base) = h.get(&Yaml::String("<<".into())) {
            out.extend(merged(base));
        }
        for (k, v) in h {
            if let Some(k) = k.as_str().filter(|k| *k != "<<") {
                out.insert(k.to_owned(), v.clone());
            }
        }
    }
    out
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec().map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn the_compose_file_is_well_formed_and_consistent_with_keyflow() {
    let text = std::fs::read_to_string(docker().join("compose.yaml")).unwrap();
    let doc = YamlLoader::load_from_str(&text).expect("valid YAML").remove(0);
    let root = merged(&doc);
    let services = merged(&root["services"]);
    let declared: BTreeSet<String> = merged(&root["volumes"]).into_keys().collect();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for want in
        ["kafka-1", "kafka-2", "kafka-3", "schema-registry", "camunda", "topics", "keyflow-1", "keyflow-2", "keyflow-3", "connectors"]
    {
        assert!(names.contains(want), "service {want} missing: {names:?}");
    }

    let mut state_volumes = BTreeSet::new();
    for (name, svc) in &services {
        let svc = merged(svc);
        assert!(svc.get("image").and_then(Yaml::as_str).is_some(), "{name} has no image");
        if name != "topics" {
            assert!(!merged(&svc["healthcheck"]).is_empty(), "{name} has no health check");
        }
        for dep in merged(svc.get("depends_on").unwrap_or(&Yaml::Null)).keys() {
            assert!(services.contains_key(dep), "{name} depends on unknown {dep}");
        }
        let volumes = strings(svc.get("volumes").unwrap_or(&Yaml::Null));
        for v in &volumes {
            let source = v.split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(docker().join(source).exists(), "{name} mounts {source}, which does not exist");
            } else {
                assert!(declared.contains(source), "{name} uses volume {source}, not declared");
            }
        }
        if svc.get("image").and_then(Yaml::as_str) != Some("keyflow:latest") {
            continue;
        }
        // A keyflow service: its config must load with the environment the file gives it.
        let config_file =
            volumes.iter().find(|v| v.ends_with(":/etc/keyflow/keyflow.toml:ro")).unwrap_or_else(|| panic!("{name} mounts no config"));
        let config_path = docker().join(config_file.split(':').next().unwrap());
        let mut env: Vec<(String, String)> = merged(svc.get("environment").unwrap_or(&Yaml::Null))
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_default()))
            .map(|(k, v)| (k, if v.starts_with("${") { "from-the-environment".to_owned() } else { v }))
            .collect();
        env.push(("CAMUNDA_PASSWORD".into(), "x".into()));
        let config = Config::load(&config_path, env).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(config.instance_id.is_some(), "{name}: each instance needs its own instance.id");
        let state = config.state_dir.display().to_string();
        let state_volume =
            volumes.iter().find(|v| v.ends_with(&format!(":{state}"))).unwrap_or_else(|| panic!("{name}: no volume at state.dir {state}"));
        assert!(state_volumes.insert(state_volume.split(':').next().unwrap().to_owned()), "{name} shares a state volume");
        if let Some(file) = &config.topology.file {
            // The definition the container reads is the repository's.
            let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies").join(file.file_name().unwrap());
            let def = workflow::load(&local).unwrap();
            let t = workflow::compile(def, None).unwrap();
            let topics_script = merged(&services["topics"])["command"][0].as_str().unwrap().to_owned();
            for topic in t.source_topics().into_iter().chain(t.sink_topics()) {
                assert!(topics_script.contains(&topic), "the topics service does not create {topic}");
            }
            assert!(config.http_listen.is_some() && config.http_peers.len() == 2, "{name}: http.listen and two peers");
            assert!(config.http_auth_token.is_some(), "{name}: the console's token comes from the environment");
        }
    }
    assert_eq!(state_volumes.len(), 4, "three workflow instances and the connectors, each with its own state volume");
}

/// Prometheus scrapes every keyflow service, and every series the Grafana dashboard plots is one
/// keyflow exports.
#[test]
fn prometheus_scrapes_every_instance_and_the_dashboard_plots_what_keyflow_exports() {
    let text = std::fs::read_to_string(docker().join("compose.yaml")).unwrap();
    let services = merged(&merged(&YamlLoader::load_from_str(&text).unwrap().remove(0))["services"]);
    let keyflow: BTreeSet<String> = services
        .iter()
        .filter(|(_, s)| merged(s).get("image").and_then(Yaml::as_str) == Some("keyflow:latest"))
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(keyflow.len(), 4);
    let prometheus = YamlLoader::load_from_str(&std::fs::read_to_string(docker().join("prometheus.yml")).unwrap()).unwrap().remove(0);
    let targets: BTreeSet<String> = strings(&prometheus["scrape_configs"][0]["static_configs"][0]["targets"])
        .into_iter()
        .map(|t| t.trim_end_matches(":8080").to_owned())
        .collect();
    assert_eq!(targets, keyflow, "every keyflow service is scraped on its http.listen port");
    assert_eq!(prometheus["scrape_configs"][0]["metrics_path"].as_str(), Some("/metrics"));

    // The families keyflow's exposition declares.
    let status = keyflow::runtime::Status::default();
    let exported: BTreeSet<String> = keyflow::metrics::render("app", &status)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(docker().join("grafana/dashboards/keyflow.json")).unwrap()).unwrap();
    let mut plotted = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("keyflow_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(exported.contains(&name), "panel `{}` plots {name}, which keyflow does not export", panel["title"]);
                plotted.insert(name);
            }
        }
    }
    for needed in [
        "keyflow_consumer_lag",
        "keyflow_records_processed_total",
        "keyflow_commit_latency_seconds_mean",
        "keyflow_restoring",
        "keyflow_workflow_instances",
        "keyflow_dead_letters_total",
    ] {
        assert!(plotted.contains(needed), "the dashboard does not plot {needed}");
    }
}
