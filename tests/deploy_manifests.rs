//! The deployment files are checked offline, so `cargo test` counts them:
//! deploy/k8s against the Kubernetes schemas of the `kubernetes-validate`
//! package (plus a schema of our own for the operator's RabbitmqCluster), and
//! docker-compose.yml in every profile by a structure check (no Docker here).
//! The checks live in tests/deploy/check_deploy.py and run in the Python
//! virtual environment scripts/test prepares (target/venv, or $POSTLINE_VENV);
//! without it these tests skip with a printed note.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// The virtual environment's python, if it has the validators.
fn python(test: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("POSTLINE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target").join("venv"));
    let python = venv.join("bin").join("python");
    let ready = Command::new(&python)
        .args(["-c", "import kubernetes_validate, jsonschema, yaml"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    if ready {
        Some(python)
    } else {
        println!(
            "SKIPPED {test}: no Python environment with kubernetes-validate at {}; \
             scripts/test creates it (python3 -m venv, pip install kubernetes-validate)",
            venv.display()
        );
        None
    }
}

/// Runs the checker on `repo` and returns (success, output).
fn check(python: &Path, args: &[&str], repo: &Path) -> (bool, String) {
    let script = self::repo().join("tests/deploy/check_deploy.py");
    let output = Command::new(python)
        .arg(script)
        .arg(args[0])
        .arg(repo)
        .args(&args[1..])
        .output()
        .expect("running tests/deploy/check_deploy.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The longest receiver timeout a subscription may set, in seconds: the
/// services' grace period on SIGTERM must be longer.
fn max_receiver_timeout_secs() -> String {
    (postline_shared::model::subscription::MAX_TIMEOUT_MS.div_ceil(1000)).to_string()
}

#[test]
fn the_kubernetes_manifests_validate_against_their_schemas() {
    let Some(python) = python("the_kubernetes_manifests_validate_against_their_schemas") else {
        return;
    };
    let (ok, output) = check(&python, &["k8s", &max_receiver_timeout_secs()], &repo());
    assert!(ok, "deploy/k8s does not validate:\n{output}");
    for kind in [
        "RabbitmqCluster",
        "StatefulSet redis",
        "Deployment delivery",
        "PodDisruptionBudget",
    ] {
        assert!(output.contains(kind), "{kind} was not checked:\n{output}");
    }
}

#[test]
fn the_compose_file_is_well_formed_in_every_profile() {
    let Some(python) = python("the_compose_file_is_well_formed_in_every_profile") else {
        return;
    };
    let (ok, output) = check(&python, &["compose"], &repo());
    assert!(ok, "docker-compose.yml has problems:\n{output}");
    assert!(
        output.contains("(profile cluster) service delivery-cluster"),
        "the cluster profile was not checked:\n{output}"
    );
}

#[test]
fn a_manifest_with_an_unknown_field_or_a_classic_default_queue_type_is_refused() {
    let Some(python) =
        python("a_manifest_with_an_unknown_field_or_a_classic_default_queue_type_is_refused")
    else {
        return;
    };
    // A copy of deploy/k8s with two mistakes the checker must catch.
    let copy = std::env::temp_dir().join(format!(
        "postline-k8s-check-{}",
        postline_tests::namespace::unique()
    ));
    let k8s = copy.join("deploy").join("k8s");
    std::fs::create_dir_all(&k8s).expect("creating the copy");
    for entry in std::fs::read_dir(repo().join("deploy/k8s")).expect("listing deploy/k8s") {
        let path = entry.expect("a directory entry").path();
        let mut text = std::fs::read_to_string(&path).expect("reading a manifest");
        match path.file_name().and_then(|n| n.to_str()) {
            Some("delivery.yaml") => text = text.replacen("  replicas:", "  replicaz:", 1),
            Some("rabbitmq.yaml") => {
                text = text.replace(
                    "default_queue_type = quorum",
                    "default_queue_type = classic",
                )
            }
            _ => {}
        }
        let name = path.file_name().expect("a file name");
        std::fs::write(k8s.join(name), text).expect("writing the copy");
    }
    let (ok, output) = check(&python, &["k8s", &max_receiver_timeout_secs()], &copy);
    let _ = std::fs::remove_dir_all(&copy);
    assert!(!ok, "the broken copy passed:\n{output}");
    assert!(output.contains("'replicaz' was unexpected"), "{output}");
    assert!(output.contains("default_queue_type = quorum"), "{output}");
}
