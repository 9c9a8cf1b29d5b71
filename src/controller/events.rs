//! Kubernetes events: only on transitions, through one shared recorder so repeats aggregate.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event as K8sEvent, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{EventType, Reporter},
};

use super::run::vocabulary::{EventAction, EventReason};
use crate::{
    sync::lock,
    text::{NOTE_MAX, truncate},
};

/// How long a published event is remembered: a repeat within this window (same type, reason,
/// action and object reference) patches the first Event's series count instead of creating a new
/// Event. The same window as kube's own recorder.
const REPEAT_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Expired entries are swept at most this often (a lookup ignores them in between).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Publishes `events.k8s.io/v1` Events and aggregates repeats into a series, as kube's `Recorder`
/// does, with a compact memory of recent events: a digest of its identity and its creation time per
/// event instead of a copy of the whole Event and its object reference. After thousands of builds finish
/// at once the window holds two events per build, and the full copies were most of the operator's
/// memory.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    recent: Arc<Mutex<Recent>>,
}

/// Events published within [`REPEAT_WINDOW`], by the digest of their [`key`]: 16 bytes an event
/// instead of the key's text (about 150), for the two events of every build of a burst.
struct Recent {
    seen: HashMap<u128, Seen>,
    swept: Instant,
}

/// A published Event: when it was created (its name is made from that and the object's name, so
/// only the time is kept), its series count so far and when it was last published.
struct Seen {
    created: i128,
    count: i32,
    at: Instant,
}

impl Recent {
    fn new(now: Instant) -> Recent {
        Recent {
            seen: HashMap::new(),
            swept: now,
        }
    }

    /// The name and next series count of the Event that `key` repeats, if it was published within
    /// the window. Sweeps expired entries now and then.
    fn repeat_of(&mut self, key: &str, now: Instant) -> Option<(i128, i32)> {
        let key = crate::digest::of(key);
        if now.saturating_duration_since(self.swept) >= SWEEP_EVERY {
            self.seen
                .retain(|_, s| now.saturating_duration_since(s.at) < REPEAT_WINDOW);
            self.seen.shrink_to_fit();
            self.swept = now;
        }
        self.seen
            .get(&key)
            .filter(|s| now.saturating_duration_since(s.at) < REPEAT_WINDOW)
            .map(|s| (s.created, s.count.saturating_add(1)))
    }

    fn record(&mut self, key: &str, seen: Seen) {
        self.seen.insert(crate::digest::of(key), seen);
    }
}

/// The identity of an event for aggregation: type, reason, action and every field of the object
/// reference (resourceVersion included), and of the related object when there is one. Each field is
/// written as `-` when absent or as `<byte length>:<text>`, so two different identities never give
/// the same key.
fn key(
    type_: EventType,
    reason: &str,
    action: &str,
    r: &ObjectReference,
    related: Option<&ObjectReference>,
) -> Box<str> {
    let mut k = String::with_capacity(128);
    k.push(match type_ {
        EventType::Normal => 'N',
        EventType::Warning => 'W',
    });
    let mut fields = vec![Some(reason), Some(action)];
    fields.extend(reference_fields(r));
    if let Some(related) = related {
        fields.push(Some("related"));
        fields.extend(reference_fields(related));
    }
    for field in fields {
        match field {
            None => k.push('-'),
            Some(text) => {
                let _ = write!(k, "{}:{text}", text.len());
            }
        }
    }
    k.into_boxed_str()
}

fn reference_fields(r: &ObjectReference) -> [Option<&str>; 7] {
    [
        r.api_version.as_deref(),
        r.kind.as_deref(),
        r.namespace.as_deref(),
        r.name.as_deref(),
        r.uid.as_deref(),
        r.resource_version.as_deref(),
        r.field_path.as_deref(),
    ]
}

impl Recorder {
    /// A recorder that reports as `reporter` (controller name, and instance: the pod).
    pub fn new(client: Client, reporter: Reporter) -> Recorder {
        let instance = reporter.instance.unwrap_or_else(|| reporter.controller.clone());
        Recorder {
            client,
            controller: reporter.controller,
            instance,
            recent: Arc::new(Mutex::new(Recent::new(Instant::now()))),
        }
    }

    /// Creates an Event about `reference`, or, when the same event was published within the
    /// window, patches that Event's series (count and last observed time).
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        self.publish_related(reference, None, type_, reason, action, note)
            .await
    }

    /// [`Recorder::publish`] with a related object (the Event's `related`: an object the action
    /// created or deleted). Events about different related objects are never aggregated.
    pub(crate) async fn publish_related(
        &self,
        reference: &ObjectReference,
        related: Option<&ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let key = key(type_, reason, action, reference, related);
        let repeat = lock(&self.recent).repeat_of(&key, Instant::now());
        let namespace = reference.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let now = Timestamp::now();
        let seen = match repeat {
            Some((created, count)) => {
                let name = event_name(reference.name.as_deref().unwrap_or(&self.controller), created);
                let series = EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                };
                let patch = serde_json::json!({ "series": series });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Seen {
                    created,
                    count,
                    at: Instant::now(),
                }
            }
            None => {
                let created = now.as_nanosecond();
                let name = event_name(reference.name.as_deref().unwrap_or(&self.controller), created);
                let event = K8sEvent {
                    action: Some(action.to_string()),
                    reason: Some(reason.to_string()),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(reference.clone()),
                    related: related.cloned(),
                    note: Some(note),
                    metadata: ObjectMeta {
                        namespace: reference.namespace.clone(),
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    type_: Some(
                        match type_ {
                            EventType::Normal => "Normal",
                            EventType::Warning => "Warning",
                        }
                        .to_string(),
                    ),
                    ..K8sEvent::default()
                };
                api.create(&PostParams::default(), &event).await?;
                Seen {
                    created,
                    count: 1,
                    at: Instant::now(),
                }
            }
        };
        lock(&self.recent).record(&key, seen);
        Ok(())
    }
}

/// The most characters of an object name (a DNS subdomain), so of an Event's name.
const NAME_MAX: usize = 253;

/// The name of a new Event about the object `object`, as Kubernetes' recorders name them
/// (`<object>.<time in hex>`), within the 253 characters a name may have: a long object name is cut
/// (and the cut never ends in `-` or `.`, which a DNS subdomain refuses there).
fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!(".{nanos:x}");
    let room = NAME_MAX.saturating_sub(suffix.len());
    // Object names are ASCII (DNS subdomains), so a byte cut is a character cut; stay safe anyway.
    let mut end = object.len().min(room);
    while !object.is_char_boundary(end) {
        end -= 1;
    }
    let base = object[..end].trim_end_matches(['-', '.']);
    format!("{base}{suffix}")
}

/// Publishes one event; failures are logged, never fatal (an event is a report, not a state).
pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: EventReason,
    action: EventAction,
    note: impl Into<String>,
) {
    let reference = obj.object_ref(&());
    publish_to(
        recorder,
        &reference,
        type_,
        reason.as_str(),
        action.as_str(),
        note,
    )
    .await;
}

/// Publishes one event about `obj` whose action created or deleted `related` (a schedule's build).
pub(crate) async fn publish_about<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    related: &ObjectReference,
    type_: EventType,
    reason: EventReason,
    action: EventAction,
    note: impl Into<String>,
) {
    let note = truncate(&note.into(), NOTE_MAX);
    let reference = obj.object_ref(&());
    let reason = reason.as_str();
    if let Err(err) = recorder
        .publish_related(&reference, Some(related), type_, reason, action.as_str(), note)
        .await
    {
        tracing::warn!(error = %err, reason, "could not publish an event");
    }
}

/// Publishes one event about the object `reference` points at, with a reason from outside
/// [`EventReason`]: a failed reconcile's error category, or a schedule's `Stalled` reason.
pub(crate) async fn publish_to(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: impl Into<String>,
) {
    let note = truncate(&note.into(), NOTE_MAX);
    if let Err(err) = recorder.publish(reference, type_, reason, action, note).await {
        tracing::warn!(error = %err, reason, "could not publish an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of an event with no related object.
    fn key(type_: EventType, reason: &str, action: &str, r: &ObjectReference) -> Box<str> {
        super::key(type_, reason, action, r, None)
    }

    #[test]
    fn events_about_different_related_objects_are_not_aggregated() {
        let r = reference("nightly", "7");
        let build = |name: &str| ObjectReference {
            name: Some(name.into()),
            ..reference(name, "1")
        };
        let a = super::key(
            EventType::Normal,
            "BuildCreated",
            "CreateBuild",
            &r,
            Some(&build("n-1")),
        );
        let b = super::key(
            EventType::Normal,
            "BuildCreated",
            "CreateBuild",
            &r,
            Some(&build("n-2")),
        );
        assert_ne!(a, b);
        assert_ne!(a, key(EventType::Normal, "BuildCreated", "CreateBuild", &r));
        assert_eq!(
            a,
            super::key(
                EventType::Normal,
                "BuildCreated",
                "CreateBuild",
                &r,
                Some(&build("n-1"))
            )
        );
    }

    fn reference(name: &str, rv: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("kube-dss.dev/v1alpha1".into()),
            kind: Some("DatasetBuild".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some("0b0c5a4e-1111-2222-3333-444455556666".into()),
            resource_version: Some(rv.into()),
            field_path: None,
        }
    }

    #[test]
    fn keys_differ_whenever_a_field_differs() {
        let r = reference("b", "7");
        let base = key(EventType::Normal, "JobStarted", "StartJob", &r);
        assert_eq!(base, key(EventType::Normal, "JobStarted", "StartJob", &r.clone()));
        assert_ne!(base, key(EventType::Warning, "JobStarted", "StartJob", &r));
        assert_ne!(base, key(EventType::Normal, "JobFailed", "StartJob", &r));
        assert_ne!(base, key(EventType::Normal, "JobStarted", "Poll", &r));
        assert_ne!(
            base,
            key(EventType::Normal, "JobStarted", "StartJob", &reference("b", "8"))
        );
        assert_ne!(
            base,
            key(EventType::Normal, "JobStarted", "StartJob", &reference("c", "7"))
        );
        let no_rv = ObjectReference {
            resource_version: None,
            ..r.clone()
        };
        assert_ne!(base, key(EventType::Normal, "JobStarted", "StartJob", &no_rv));
        // Text moved across a field boundary gives another key.
        assert_ne!(
            key(EventType::Normal, "ab", "c", &r),
            key(EventType::Normal, "a", "bc", &r)
        );
        let empty = ObjectReference {
            field_path: Some(String::new()),
            ..r.clone()
        };
        assert_ne!(base, key(EventType::Normal, "JobStarted", "StartJob", &empty));
    }

    /// Whether `name` is a DNS subdomain, as the API server checks an Event's name.
    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= NAME_MAX
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    #[test]
    fn event_names_stay_within_253_characters_for_long_object_names() {
        let nanos = 1_767_225_600_123_456_789_i128;
        assert_eq!(event_name("nightly", nanos), "nightly.18867251f555cd15");
        for object in [
            "a".repeat(253),
            format!("{}-{}", "a".repeat(235), "b".repeat(17)),
            format!("{}.{}", "a".repeat(235), "b".repeat(17)),
            format!("{}--x", "a".repeat(234)),
            "a".repeat(236),
        ] {
            let name = event_name(&object, nanos);
            assert!(name.len() <= 253, "{} characters: {name}", name.len());
            assert!(is_dns_subdomain(&name), "{name}");
            assert!(name.ends_with(".18867251f555cd15"), "{name}");
            assert!(object.starts_with(&name[..name.len() - 17]), "{name}");
        }
        // Names of different times stay apart.
        let long = "a".repeat(253);
        assert_ne!(event_name(&long, nanos), event_name(&long, nanos + 1));
    }

    fn seen(created: i128, count: i32, at: Instant) -> Seen {
        Seen { created, count, at }
    }

    #[test]
    fn a_repeat_within_the_window_continues_the_series() {
        let t0 = Instant::now();
        let mut recent = Recent::new(t0);
        assert_eq!(recent.repeat_of("k", t0), None);
        recent.record("k", seen(1, 1, t0));
        let later = t0 + Duration::from_secs(60);
        assert_eq!(recent.repeat_of("k", later), Some((1, 2)));
        recent.record("k", seen(1, 2, later));
        // The window runs from the last repeat.
        let near_end = later + REPEAT_WINDOW - Duration::from_secs(1);
        assert_eq!(recent.repeat_of("k", near_end), Some((1, 3)));
        assert_eq!(recent.repeat_of("other", near_end), None);
    }

    #[test]
    fn events_past_the_window_are_forgotten() {
        let t0 = Instant::now();
        let mut recent = Recent::new(t0);
        recent.record("old", seen(2, 1, t0));
        let t1 = t0 + REPEAT_WINDOW - Duration::from_secs(5);
        recent.record("new", seen(1, 1, t1));
        let t2 = t0 + REPEAT_WINDOW;
        // Expired but not yet swept: still not a repeat.
        recent.swept = t2;
        assert_eq!(recent.repeat_of("old", t2), None);
        assert_eq!(recent.seen.len(), 2);
        // The next sweep drops it and keeps the other.
        let t3 = t2 + SWEEP_EVERY;
        assert_eq!(recent.repeat_of("new", t3), Some((1, 2)));
        assert_eq!(recent.seen.len(), 1);
        assert!(recent.seen.contains_key(&crate::digest::of("new")));
    }
}
