//! How every Kafka client keyflow builds reaches the cluster: one place for `bootstrap.servers`
//! and the settings all clients need (security above all), as Kafka Streams' top-level client
//! settings apply to all its clients and `consumer.`/`producer.`/`admin.` prefixes override them.
//!
//! In the configuration: `[client]` (every client: `security.protocol`, `sasl.*`, `ssl.*`,
//! `client.rack`, ...), then `[consumer]`, `[producer]` and `[admin]`, which add to it or
//! override it for that kind of client. The stream thread's consumer, restore consumer and
//! producer, the admin client, the start-up partition lookup, `dlq` (reads and the redrive's
//! producer), `replay`, `tasks` and the console all build their clients here, so a cluster behind
//! SASL or TLS is reached by all of them or by none.

use rdkafka::ClientConfig;

use crate::config::KafkaProps;

/// Where the cluster is and the settings each kind of client takes. `Debug` redacts secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clients {
    pub bootstrap: String,
    /// `[client]`: every client.
    pub common: KafkaProps,
    pub consumer: KafkaProps,
    pub producer: KafkaProps,
    pub admin: KafkaProps,
}

/// A kind of client, for the settings it takes after the common ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
    Admin,
}

impl Clients {
    /// A cluster reached with `bootstrap.servers` alone (a plaintext test broker).
    pub fn plain(bootstrap: &str) -> Clients {
        Clients { bootstrap: bootstrap.to_owned(), ..Clients::default() }
    }

    /// `bootstrap.servers` and the common settings: the base keyflow's own settings go on, before
    /// the user's for the role ([`Clients::apply_role`]) override them.
    pub fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.common.0 {
            c.set(k, v);
        }
        c
    }

    /// Sets the user's settings of `role` on `c`.
    pub fn apply_role(&self, c: &mut ClientConfig, role: Role) {
        let props = match role {
            Role::Consumer => &self.consumer,
            Role::Producer => &self.producer,
            Role::Admin => {
                // Configurations written before `[client]` existed put the credentials in
                // `[consumer]` and `[producer]`, and the admin client took them from
                // `[producer]`: it still does, under `[admin]`.
                for (k, v) in self.producer.0.iter().filter(|(k, _)| is_security(k)) {
                    c.set(k, v);
                }
                &self.admin
            }
        };
        for (k, v) in &props.0 {
            c.set(k, v);
        }
    }

    /// A client of `role` for a tool (a reader, a redrive): the base and the role's settings;
    /// the tool then sets what it relies on, last.
    pub fn config(&self, role: Role) -> ClientConfig {
        let mut c = self.base();
        self.apply_role(&mut c, role);
        c
    }
}

/// A setting of how a client authenticates or encrypts.
fn is_security(key: &str) -> bool {
    key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.")
}

impl Clients {
    /// A tool's producer (`send`, `replay`): idempotent, with Java's partitioner, so a key lands
    /// where keyflow's and Java's producers put it.
    pub fn producer(&self) -> ClientConfig {
        let mut c = self.config(Role::Producer);
        c.set("enable.idempotence", "true").set("partitioner", "murmur2_random");
        c
    }

    /// A tool's transactional producer (`dlq redrive|purge`, `tasks complete`): `transactional_id`
    /// is shared by every operator doing the same thing, so one fences the other.
    pub fn transactional_producer(&self, transactional_id: &str) -> ClientConfig {
        let mut c = self.producer();
        c.set("transactional.id", transactional_id);
        c
    }
}

impl From<&str> for Clients {
    fn from(bootstrap: &str) -> Clients {
        Clients::plain(bootstrap)
    }
}

impl From<&String> for Clients {
    fn from(bootstrap: &String) -> Clients {
        Clients::plain(bootstrap)
    }
}

impl From<&Clients> for Clients {
    fn from(c: &Clients) -> Clients {
        c.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> KafkaProps {
        KafkaProps(kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn every_client_takes_the_common_settings_and_its_role_overrides_them() {
        let c = Clients {
            bootstrap: "k1:9093".into(),
            common: props(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "SCRAM-SHA-512"), ("client.rack", "a")]),
            consumer: props(&[("client.rack", "b")]),
            producer: props(&[("linger.ms", "1")]),
            admin: props(&[]),
        };
        for role in [Role::Consumer, Role::Producer, Role::Admin] {
            let cfg = c.config(role);
            assert_eq!(cfg.get("bootstrap.servers"), Some("k1:9093"));
            assert_eq!(cfg.get("security.protocol"), Some("SASL_SSL"), "{role:?}");
            assert_eq!(cfg.get("sasl.mechanism"), Some("SCRAM-SHA-512"), "{role:?}");
        }
        assert_eq!(c.config(Role::Consumer).get("client.rack"), Some("b"), "the role overrides");
        assert_eq!(c.config(Role::Producer).get("client.rack"), Some("a"));
        assert_eq!(c.config(Role::Producer).get("linger.ms"), Some("1"));
        assert_eq!(c.config(Role::Consumer).get("linger.ms"), None, "a producer setting stays the producer's");
    }
}
