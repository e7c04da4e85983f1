//! `cargo xtask deploy-check`: every artifact in deploy/ and .github/workflows/ through a real
//! validator, offline, with the pinned tools setup installed (see
//! ../shared/notes/ecosystem-validators.md).
//!
//! - ECS task definitions, services and the Express Mode input: AWS's ECS API model from botocore,
//!   and edge's own rules (`py/check_ecs.py`), whose self-test breaks each rule once;
//! - the CloudFormation template: cfn-lint;
//! - the workflows: actionlint, with shellcheck for `run:` steps;
//! - the Grafana dashboard: Grafana's published types (`@grafana/schema`) with `tsc --strict`.
//!
//! The Dockerfile (hadolint) and image (buildah) are `image`'s; the alert rules (promtool) and the
//! dashboard's queries (a real Prometheus) are tests of the edge-agent crate.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

use crate::util::{exec, root, tools_dir};

/// The workflows actionlint checks.
const WORKFLOWS: &str = ".github/workflows";
/// The CloudFormation template.
const TEMPLATE: &str = "deploy/cloudformation/edge.yaml";
/// The Grafana dashboard.
const DASHBOARD: &str = "deploy/grafana/edge.json";

/// Runs every validator; the first failure stops with its output. Then each validator gets a
/// copy with one known mistake and must refuse it, so a path or flag that stopped checking
/// anything cannot pass unnoticed.
pub fn run() -> anyhow::Result<()> {
    check(&root(), Path::new("."))?;
    broken_copies_are_refused()
}

/// The validators over the artifacts of `root`, `artifacts` (relative to it) holding deploy/ and
/// .github/.
fn check(root: &Path, artifacts: &Path) -> anyhow::Result<()> {
    let dir = root.join(artifacts);
    let python = tools_dir().join("venv/bin/python");
    let check_ecs = root.join("xtask/py/check_ecs.py");
    exec(Command::new(&python).arg(&check_ecs).arg("deploy").current_dir(&dir))?;
    if artifacts == Path::new(".") {
        exec(Command::new(&python).arg(&check_ecs).args(["deploy", "--self-test"]).current_dir(&dir))?;
    }
    exec(Command::new(tools_dir().join("bin/cfn-lint")).arg(TEMPLATE).current_dir(&dir))?;
    eprintln!("cfn-lint: {TEMPLATE} has no findings");
    let mut workflows: Vec<String> = std::fs::read_dir(dir.join(WORKFLOWS))
        .with_context(|| format!("cannot list {WORKFLOWS}"))?
        .filter_map(Result::ok)
        .map(|e| format!("{WORKFLOWS}/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
        .collect();
    workflows.sort();
    exec(
        Command::new(tools_dir().join("bin/actionlint"))
            .args(["-no-color", "-shellcheck", "shellcheck"])
            .args(&workflows)
            .current_dir(&dir),
    )?;
    eprintln!("actionlint: {} has no findings", workflows.join(", "));
    dashboard_types(&dir.join(DASHBOARD))?;
    eprintln!("tsc: {DASHBOARD} satisfies @grafana/schema's Dashboard");
    Ok(())
}

/// Copies the artifacts under `target/deploy-check`, breaks one of them with `edit`, and expects
/// `check` to fail.
fn broken_copies_are_refused() -> anyhow::Result<()> {
    let root = root();
    let copy = root.join("target/deploy-check");
    // Each: the file, the text replaced, its replacement, what the mistake is.
    let mistakes = [
        (TEMPLATE, "Type: AWS::ECS::Cluster\n", "Type: AWS::ECS::Clustre\n", "a misspelt resource type"),
        (
            "deploy/grafana/edge.json",
            "\"schemaVersion\": 41",
            "\"schemaVersion\": \"41\"",
            "a number written as a string",
        ),
        (
            ".github/workflows/deploy-ecs.yml",
            "\njobs:\n",
            "\njobs:\n  broken:\n    runs-on: ubuntu-24.04\n    needs: no-such-job\n    steps:\n      - run: echo $1\n",
            "a job needing one that does not exist, and an unquoted variable",
        ),
    ];
    for (file, from, to, what) in mistakes {
        let _ = std::fs::remove_dir_all(&copy);
        for part in ["deploy", ".github"] {
            copy_dir(&root.join(part), &copy.join(part))?;
        }
        let path = copy.join(file);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(text.contains(from), "{file} no longer contains {from:?}; update the broken copy in deploy.rs");
        std::fs::write(&path, text.replacen(from, to, 1))?;
        eprintln!("deploy-check: a copy of {file} with {what} must be refused:");
        if check(&root, Path::new("target/deploy-check")).is_ok() {
            anyhow::bail!("the validators accepted {file} with {what}: a check is not running");
        }
    }
    let _ = std::fs::remove_dir_all(&copy);
    eprintln!("deploy-check: every broken copy was refused");
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Type-checks the dashboard against `@grafana/schema`: the JSON becomes a TypeScript object
/// literal that must satisfy `Dashboard`, so wrong types and unknown keys are errors. `Json<T>`
/// maps the schema's string enums (colour mode, thresholds mode, mapping type) to their string
/// values, which is what a JSON file holds: a TypeScript enum accepts no string literal.
fn dashboard_types(dashboard: &Path) -> anyhow::Result<()> {
    let json = std::fs::read_to_string(dashboard).with_context(|| format!("cannot read {}", dashboard.display()))?;
    let dir = tools_dir().join("npm/dashboard-check");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("dashboard.ts"),
        format!(
            "import type {{ Dashboard }} from \"@grafana/schema\";\n\n\
             type Json<T> = T extends string ? `${{T}}` : T extends number | boolean | null | undefined ? T\n  \
             : T extends readonly (infer U)[] ? Json<U>[] : T extends object ? {{ [K in keyof T]: Json<T[K]> }} : T;\n\n\
             export const dashboard = ({json}) satisfies Json<Dashboard>;\n"
        ),
    )?;
    let schema = tools_dir().join("npm/node_modules/@grafana/schema");
    let config = serde_json::json!({
        "compilerOptions": {
            "strict": true, "noEmit": true, "target": "es2022", "module": "esnext", "moduleResolution": "bundler",
            "types": [], "skipLibCheck": true, "paths": { "@grafana/schema": [schema] }
        },
        "files": ["dashboard.ts"]
    });
    std::fs::write(dir.join("tsconfig.json"), config.to_string())?;
    exec(Command::new(tools_dir().join("npm/node_modules/.bin/tsc")).arg("-p").arg(dir.join("tsconfig.json")))
}
