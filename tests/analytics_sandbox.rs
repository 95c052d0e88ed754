//! The analytics decoder over devkit's whole sandbox dataset, and the definition snapshot
//! store against the fake Qualtrics and real Azurite.

mod common;

use devkit::azurite::Azurite;
use devkit::fakes::qualtrics::FakeQualtrics;
use devkit::fakes::sandbox_data::{
    self, SandboxDataset, DEFINITION_VERSION, SANDBOX_ANALYTICS_SURVEY,
};
use qualtrics_bridge::analytics::decode::{decode, Policy, RowContext};
use qualtrics_bridge::analytics::definition::{Definition, Definitions};
use qualtrics_bridge::analytics::rows::{DecodeStatus, QuestionResponseRow};
use qualtrics_bridge::analytics::store::{DefinitionStore, Refreshed};
use qualtrics_bridge::qualtrics::{CallBudget, QualtricsClient, RetryPolicy};
use qualtrics_bridge::secrets::SecretsProvider;

/// 2026-01-06T00:00:00Z: after the definition's `LastModified`.
const START_MS: i64 = 1_767_657_600_000;

fn dataset() -> SandboxDataset {
    sandbox_data::generate(
        SANDBOX_ANALYTICS_SURVEY,
        sandbox_data::SANDBOX_SEED,
        3000,
        START_MS,
        120,
    )
}

fn policy() -> Policy {
    Policy {
        embedded_allow: vec!["Store".into(), "Region".into()],
        free_text: true,
        ..Policy::default()
    }
}

fn definitions(data: &SandboxDataset) -> Definitions {
    let d = Definition::from_raw(&data.survey_id, data.definition.clone()).expect("definition");
    Definitions::new(vec![d])
}

/// Every generated answer is in the decoded rows with the value the generator meant, every
/// answered cell decodes `ok`, and the allow-listed embedded data (only that) is there.
#[test]
fn every_generated_answer_decodes_to_the_intended_value() {
    let data = dataset();
    let defs = definitions(&data);
    let mut checked = 0usize;
    for r in &data.responses {
        let ctx = RowContext {
            survey_id: &data.survey_id,
            exported_at: 1,
            source_blob: "sandbox",
        };
        let d = decode(r.text.as_bytes(), &ctx, &defs, &policy()).expect("decodes");
        assert_eq!(d.response.response_id, r.id);
        assert_eq!(d.response.recorded_at, r.recorded_ms * 1000);
        for want in &r.intended {
            let found: Vec<&QuestionResponseRow> = d
                .cells
                .iter()
                .filter(|c| c.export_key == want.export_key && c.item_index == want.item_index)
                .collect();
            assert_eq!(found.len(), 1, "{}: {} once", r.id, want.export_key);
            let c = found[0];
            assert_eq!(
                (
                    c.question_id.as_str(),
                    c.loop_id.as_deref(),
                    c.sub_key.as_deref(),
                    c.field.as_str()
                ),
                (
                    want.question_id,
                    want.loop_id.as_deref(),
                    want.sub_key.as_deref(),
                    want.field
                ),
                "{}: {}",
                r.id,
                want.export_key
            );
            assert_eq!(c.value_num, want.value_num, "{}: {}", r.id, want.export_key);
            assert_eq!(
                c.value_text, want.value_text,
                "{}: {}",
                r.id, want.export_key
            );
            assert_eq!(
                c.decode_status,
                DecodeStatus::Ok,
                "{}: {}",
                r.id,
                want.export_key
            );
            assert_eq!(c.definition_version.as_deref(), Some(DEFINITION_VERSION));
            assert!(c.answered && c.displayed);
            checked += 1;
        }
        // Nothing answered that the generator did not mean; the rest are shown-but-skipped.
        let answered = d.cells.iter().filter(|c| c.answered).count();
        assert_eq!(answered, r.intended.len(), "{}", r.id);
        assert!(
            d.cells.iter().all(|c| c.decode_status == DecodeStatus::Ok),
            "{}",
            r.id
        );
        let mut embedded: Vec<_> = d
            .embedded
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let mut want: Vec<_> = r
            .embedded
            .iter()
            .filter(|(k, _)| k != "Email")
            .cloned()
            .collect();
        embedded.sort();
        want.sort();
        assert_eq!(embedded, want, "{}", r.id);
        assert!(
            !format!("{d:?}").contains("203.0.113."),
            "an IP address reached the rows"
        );
    }
    assert!(checked > 3000 * 8, "{checked} answers checked");
}

/// The fake serves the definition; the store keeps one immutable snapshot per `LastModified`
/// in Azurite, and what it loads decodes the dataset like the definition itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definition_snapshots_round_trip_through_the_store() {
    let data = dataset();
    let fake = FakeQualtrics::start("token-1")
        .await
        .expect("fake qualtrics");
    fake.add_dataset(&data);
    // Exports serve the dataset's rows byte for byte, in order.
    let served: Vec<(String, String)> = fake.served(&data.survey_id);
    let want: Vec<(String, String)> = data
        .responses
        .iter()
        .map(|r| (r.id.clone(), r.text.clone()))
        .collect();
    assert_eq!(served, want);
    let azurite = Azurite::start().await.expect("azurite");
    let storage = common::storage_of(&azurite);
    let container = storage.blob_container("bridge-state").expect("container");
    qualtrics_bridge::storage::blob_state::ensure_container(&container)
        .await
        .expect("create");
    let store = DefinitionStore::new(container);
    let client = QualtricsClient::new(&fake.base_url, RetryPolicy::default()).expect("client");
    // The client reads its token through the secrets' environment fallback.
    std::env::set_var("QUALTRICS_API_TOKEN", "token-1");
    let secrets = SecretsProvider::from_env();
    let budget = CallBudget::single_call();

    assert!(store.load(&data.survey_id).await.expect("load").is_empty());
    let first = store
        .refresh(&client, &secrets, &budget, &data.survey_id)
        .await
        .expect("refresh");
    assert_eq!(first, Refreshed::Stored(DEFINITION_VERSION.into()));
    let again = store
        .refresh(&client, &secrets, &budget, &data.survey_id)
        .await
        .expect("refresh");
    assert_eq!(again, Refreshed::Unchanged(DEFINITION_VERSION.into()));
    let names = common::blob_names(&storage, "bridge-state").await;
    assert_eq!(
        names,
        [DefinitionStore::blob_name(
            &data.survey_id,
            DEFINITION_VERSION
        )]
    );

    // A new LastModified is a second snapshot; responses pick the one valid when recorded.
    let mut changed = data.definition.clone();
    changed["LastModified"] = serde_json::json!("2026-03-01T00:00:00Z");
    fake.set_definition(&data.survey_id, changed);
    let second = store
        .refresh(&client, &secrets, &budget, &data.survey_id)
        .await
        .expect("refresh");
    assert_eq!(second, Refreshed::Stored("2026-03-01T00:00:00Z".into()));
    let loaded = store.load(&data.survey_id).await.expect("load");
    let early = data.responses.first().expect("responses");
    let late = data.responses.last().expect("responses");
    let version = |r: &sandbox_data::SandboxResponse| {
        loaded
            .valid_at(r.recorded_ms * 1000)
            .map(|d| d.version.clone())
    };
    assert_eq!(version(early).as_deref(), Some(DEFINITION_VERSION));
    assert_eq!(version(late).as_deref(), Some("2026-03-01T00:00:00Z"));
    let ctx = RowContext {
        survey_id: &data.survey_id,
        exported_at: 1,
        source_blob: "b",
    };
    let from_store = decode(early.text.as_bytes(), &ctx, &loaded, &policy()).expect("decode");
    let direct =
        decode(early.text.as_bytes(), &ctx, &definitions(&data), &policy()).expect("decode");
    assert_eq!(from_store, direct);
    let versions: Vec<usize> = loaded.models().map(|m| m.rows().survey.len()).collect();
    assert_eq!(versions, [1, 1], "one survey row per version");

    // Unknown survey: the API's 404, typed.
    let err = store
        .refresh(&client, &secrets, &budget, "SV_unknown")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("404") || err.to_string().contains("not found"),
        "{err}"
    );
    let calls = fake.calls();
    assert!(calls
        .iter()
        .any(|c| c.path == format!("/API/v3/survey-definitions/{}", data.survey_id)));
}
