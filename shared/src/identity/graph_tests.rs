//! Identity scenarios and properties.

use proptest::prelude::*;

use super::*;

fn t(sec: i64) -> UtcTime {
    UtcTime::from_unix_millis(1_764_000_000_000 + sec * 1000).unwrap()
}

fn keys(rules: &IdentityRules, ks: &[&str]) -> Vec<IdKey> {
    let mut v: Vec<IdKey> = ks.iter().map(|k| k.to_string()).collect();
    v.sort_by_key(|k| (rules.priority(k), k.clone()));
    v
}

fn link(g: &mut IdentityGraph, ks: &[&str], msg: &str, sec: i64) -> Linked {
    let rules = IdentityRules::default();
    g.link(&rules, &keys(&rules, ks), msg, t(sec))
}

fn id_of(g: &IdentityGraph, key: &str) -> ProfileId {
    g.profile_of(key).map(|p| p.id.clone()).unwrap_or_else(|| panic!("{key} has no profile"))
}

#[test]
fn one_person_across_browsing_login_second_device_and_server_calls() {
    let mut g = IdentityGraph::default();
    // Anonymous browsing on a laptop.
    let first = link(&mut g, &["anonymous_id:a-laptop"], "m1", 0);
    assert!(first.created);
    link(&mut g, &["anonymous_id:a-laptop"], "m2", 10);
    // Login: identify with user id and email.
    link(&mut g, &["anonymous_id:a-laptop", "user_id:u1", "email:h(jane)"], "m3", 20);
    // A second device browses anonymously, then logs in.
    link(&mut g, &["anonymous_id:a-phone", "device_id:d-phone"], "m4", 30);
    let login = link(&mut g, &["anonymous_id:a-phone", "user_id:u1"], "m5", 40);
    assert_eq!(login.merged.len(), 1, "the phone's profile merges into the person's");
    // A server call with the same email only.
    let server = link(&mut g, &["email:h(jane)"], "m6", 50);
    assert_eq!(g.profiles().count(), 1, "one person, one profile");
    let p = g.profile(server.profile.as_deref().unwrap()).unwrap();
    assert_eq!(p.id, first.profile.clone().unwrap(), "the older profile id survives");
    assert_eq!(p.identities.len(), 5);
    // The absorbed id still resolves.
    let absorbed = &login.merged[0];
    assert_eq!(g.redirect(absorbed), Some(&p.id));
    assert_eq!(g.profile(absorbed).unwrap().id, p.id);
    assert!(p.audit.iter().any(|e| matches!(&e.kind, AuditKind::Merged { absorbed: a, .. } if a == absorbed)));
}

#[test]
fn a_shared_device_never_merges_two_user_ids() {
    let mut g = IdentityGraph::default();
    link(&mut g, &["anonymous_id:tablet", "user_id:mum"], "m1", 0);
    let dad = link(&mut g, &["anonymous_id:tablet", "user_id:dad"], "m2", 10);
    assert_eq!(g.profiles().count(), 2, "two people stay two profiles");
    assert_eq!(dad.refused, 1);
    let dad_id = dad.profile.unwrap();
    assert_eq!(id_of(&g, "user_id:dad"), dad_id, "the event attaches to its strongest identifier's profile");
    assert_ne!(id_of(&g, "user_id:mum"), dad_id);
    assert_eq!(id_of(&g, "anonymous_id:tablet"), id_of(&g, "user_id:mum"), "the device stays where it was");
    for id in [id_of(&g, "user_id:mum"), dad_id.clone()] {
        let refusals =
            g.profile(&id).unwrap().audit.iter().filter(|e| matches!(e.kind, AuditKind::MergeRefused { .. })).count();
        assert_eq!(refusals, 1, "the refusal is recorded on both profiles");
    }
    // Every later event on the tablet refuses again, but the audit does not grow.
    link(&mut g, &["anonymous_id:tablet", "user_id:dad"], "m3", 20);
    let p = g.profile(&dad_id).unwrap();
    assert_eq!(p.audit.iter().filter(|e| matches!(e.kind, AuditKind::MergeRefused { .. })).count(), 1);
}

#[test]
fn a_second_user_id_is_not_linked_to_a_profile_that_has_one() {
    let mut g = IdentityGraph::default();
    link(&mut g, &["user_id:u1", "email:h(a)"], "m1", 0);
    // Same email, another user id: the user id is strongest, so the event founds u2's profile.
    let r = link(&mut g, &["user_id:u2", "email:h(a)"], "m2", 10);
    assert_eq!(r.refused, 1);
    assert_ne!(id_of(&g, "user_id:u1"), id_of(&g, "user_id:u2"));
}

#[test]
fn blocked_values_link_nothing() {
    let rules = IdentityRules::default();
    let mut g = IdentityGraph::default();
    let mut event = sample_event("m1", Some("null"), Some("a1"));
    g.link_event(&rules, &event);
    event = sample_event("m2", Some("null"), Some("a2"));
    g.link_event(&rules, &event);
    assert_eq!(g.profiles().count(), 2, "`null` user ids do not make one person of two");
    assert!(g.profile_of("user_id:null").is_none());
    let nothing = g.link_event(&rules, &sample_event("m3", Some("undefined"), Some("0")));
    assert_eq!(nothing.profile, None);
}

#[test]
fn alias_merges_previous_id_into_the_user() {
    let rules = IdentityRules::default();
    let mut g = IdentityGraph::default();
    g.link_event(&rules, &sample_event("m1", None, Some("anon-9")));
    g.link_event(&rules, &sample_event("m2", Some("u-1"), None));
    let mut alias = sample_event("m3", Some("u-1"), None);
    alias.kind = EventType::Alias;
    alias.previous_id = Some("anon-9".into());
    let r = g.link_event(&rules, &alias);
    assert_eq!(r.merged.len(), 1);
    assert_eq!(g.profiles().count(), 1);
    assert_eq!(id_of(&g, "anonymous_id:anon-9"), id_of(&g, "user_id:u-1"));
}

#[test]
fn unlink_splits_what_no_longer_connects() {
    let rules = IdentityRules::default();
    let mut g = IdentityGraph::default();
    // A bad link through one device id joined two otherwise unrelated browsing histories.
    link(&mut g, &["anonymous_id:a1", "email:h(x)"], "m1", 0);
    link(&mut g, &["anonymous_id:a2", "device_id:bad"], "m2", 10);
    link(&mut g, &["anonymous_id:a1", "device_id:bad"], "m3", 20);
    assert_eq!(g.profiles().count(), 1);
    let before = id_of(&g, "email:h(x)");
    let parts = g.unlink(&rules, "device_id:bad", "req-1", t(100));
    assert_eq!(parts.len(), 2);
    assert_eq!(g.profiles().count(), 2);
    assert_eq!(id_of(&g, "email:h(x)"), before, "the part with the strongest identifier keeps the id");
    assert_eq!(id_of(&g, "anonymous_id:a1"), before);
    assert_ne!(id_of(&g, "anonymous_id:a2"), before);
    assert!(g.profile_of("device_id:bad").is_none());
    let split = g.profile(&id_of(&g, "anonymous_id:a2")).unwrap();
    assert!(matches!(&split.audit[0].kind, AuditKind::SplitFrom { from } if *from == before));
    // Unlinking what still connects does not split.
    link(&mut g, &["anonymous_id:a1", "email:h(x)", "phone:h(p)"], "m4", 30);
    assert_eq!(g.unlink(&rules, "phone:h(p)", "req-2", t(110)), vec![before.clone()]);
    assert_eq!(g.unlink(&rules, "phone:h(unknown)", "req-3", t(120)), Vec::<ProfileId>::new());
}

#[test]
fn graph_round_trips_through_json() {
    let mut g = IdentityGraph::default();
    link(&mut g, &["anonymous_id:a", "user_id:u"], "m1", 0);
    link(&mut g, &["anonymous_id:b", "user_id:u"], "m2", 1);
    let json = serde_json::to_string(&g).unwrap();
    assert_eq!(serde_json::from_str::<IdentityGraph>(&json).unwrap(), g);
}

fn sample_event(msg: &str, user: Option<&str>, anon: Option<&str>) -> CanonicalEvent {
    let mut identifiers = Vec::new();
    if let Some(u) = user {
        identifiers.push(crate::event::Identifier { kind: "user_id".into(), value: u.into(), sha256: None });
    }
    if let Some(a) = anon {
        identifiers.push(crate::event::Identifier { kind: "anonymous_id".into(), value: a.into(), sha256: None });
    }
    CanonicalEvent {
        message_id: msg.into(),
        kind: EventType::Track,
        source_id: "s".into(),
        received_at: t(0),
        timestamp: t(0),
        original_timestamp: None,
        sent_at: None,
        user_id: user.map(str::to_string),
        anonymous_id: anon.map(str::to_string),
        event: Some("x".into()),
        name: None,
        category: None,
        group_id: None,
        previous_id: None,
        properties: None,
        traits: None,
        context: Default::default(),
        integrations: Default::default(),
        identifiers,
        enrichment: Default::default(),
        extras: Default::default(),
    }
}

/// A person's events: a few ids of their own, linked in some pattern.
fn person(n: usize) -> impl Strategy<Value = Vec<Vec<String>>> {
    let ids = vec![
        format!("user_id:u{n}"),
        format!("email:h{n}"),
        format!("anonymous_id:a{n}"),
        format!("anonymous_id:b{n}"),
        format!("device_id:d{n}"),
    ];
    prop::collection::vec(prop::sample::subsequence(ids, 1..4), 1..5)
}

proptest! {
    /// Events of unrelated people, in any order, give identical graphs; replaying them all changes nothing.
    #[test]
    fn order_of_unrelated_people_does_not_matter_and_replay_is_a_no_op(
        people in prop::collection::vec(0usize..1, 1..6).prop_flat_map(|v| {
            let n = v.len();
            (0..n).map(person).collect::<Vec<_>>()
        }),
        seed in any::<u64>(),
    ) {
        let rules = IdentityRules::default();
        // Each person's events keep their own order (and times); people interleave arbitrarily.
        let mut events: Vec<(usize, usize, Vec<String>)> = Vec::new();
        for (p, evs) in people.iter().enumerate() {
            for (i, ks) in evs.iter().enumerate() {
                events.push((p, i, ks.clone()));
            }
        }
        let apply = |order: &[(usize, usize, Vec<String>)]| {
            let mut g = IdentityGraph::default();
            for (p, i, ks) in order {
                let mut ks = ks.clone();
                ks.sort_by_key(|k| (rules.priority(k), k.clone()));
                g.link(&rules, &ks, &format!("p{p}-e{i}"), t((*p * 100 + *i) as i64));
            }
            g
        };
        let in_order = apply(&events);
        // Interleave the people at random (seeded), keeping each person's own order.
        type Event = (usize, usize, Vec<String>);
        let mut by_person: Vec<Vec<Event>> = vec![Vec::new(); people.len()];
        for e in &events {
            by_person[e.0].push(e.clone());
        }
        let mut interleaved = Vec::new();
        let mut cursors = vec![0usize; people.len()];
        let mut pick = seed;
        while interleaved.len() < events.len() {
            pick = pick.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let p = (pick >> 33) as usize % people.len();
            if cursors[p] < by_person[p].len() {
                interleaved.push(by_person[p][cursors[p]].clone());
                cursors[p] += 1;
            }
        }
        let other = apply(&interleaved);
        prop_assert_eq!(&in_order, &other);

        let mut replayed = in_order.clone();
        for (p, i, ks) in &events {
            let mut ks = ks.clone();
            ks.sort_by_key(|k| (rules.priority(k), k.clone()));
            replayed.link(&rules, &ks, &format!("p{p}-e{i}"), t((*p * 100 + *i) as i64));
        }
        prop_assert_eq!(&in_order, &replayed);
        // One person, one profile: their ids never touch another person's.
        prop_assert!(in_order.profiles().count() >= people.iter().filter(|e| !e.is_empty()).count());
    }
}
