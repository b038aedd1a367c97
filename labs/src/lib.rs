//! The workshop's labs: one module per activity, a PostgreSQL provider every lab gets its
//! server from, and the reference event store the labs build on.
//!
//! Dependencies point one way: activity modules use `lab`, `pg` and `store`; `pg` and `store`
//! know nothing of the activities; activity modules know nothing of each other; the `labs`
//! binary (main.rs) is the only place that prints a report.

/// An enum whose variants have one kebab-case id each, written once: `id()`, `ALL`,
/// `from_id()`, clap's `ValueEnum` (unknown values list the valid ones), serde (the id), and
/// `Display` (the id).
macro_rules! id_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $id:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn id(self) -> &'static str {
                match self { $($name::$variant => $id),+ }
            }

            pub fn from_id(id: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.id() == id)
            }
        }

        impl clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                Self::ALL
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(self.id()))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.id())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let id = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                $name::from_id(&id).ok_or_else(|| {
                    let ids: Vec<&str> = Self::ALL.iter().map(|v| v.id()).collect();
                    serde::de::Error::custom(format!("unknown {} '{id}'; expected one of: {}", stringify!($name), ids.join(", ")))
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.id())
            }
        }
    };
}

pub mod course;
pub mod error;
pub mod lab;
pub mod log_sleuth;
pub mod mythbusting;
pub mod outage;
pub mod outbox_relay;
pub mod pg;
pub mod reflection_wall;
pub mod replay_clock;
pub mod rng;
pub mod schema_sketch;
pub mod settings;
pub mod store;
pub mod wal_race;

pub use error::{Exit, LabError};
pub use lab::{AnyLab, Ctx, Lab};

/// Every lab, in course order: one line per activity. A test walks this list against
/// course.toml (every ready activity has a lab and every lab an activity, with the same needs).
pub static LABS: &[&dyn AnyLab] = &[
    &log_sleuth::LogSleuth,
    &mythbusting::Mythbusting,
    &schema_sketch::SchemaSketch,
    &wal_race::WalRace,
    &outage::Outage,
    &reflection_wall::ReflectionWall,
    &outbox_relay::OutboxRelay,
    &replay_clock::ReplayClock,
];
