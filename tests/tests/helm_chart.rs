//! The Helm chart `helm/hallmark` (issue 13):
//! - `helm lint --strict` and `helm template` pass with the default and the HA values, and the
//!   rendered manifests validate against the Kubernetes 1.31 and 1.35 schemas
//!   (`kubernetes-validate --strict`);
//! - the rendered objects hold what the chart promises: replicas, a non-root read-only pod
//!   without capabilities, the three probes, PDB, NetworkPolicy, a CA configuration that
//!   `hallmark-ca` accepts, and no key material;
//! - values the schema refuses (wrong types, unknown keys, root, privileges, bad URLs) are
//!   refused by `helm lint` and `helm template` with the schema's error, and strings cannot
//!   inject configuration;
//! - the README's guide, played as a kubelet would: its `hallmark-ca init` and Secrets, then the
//!   rendered mounts, arguments and probes of each of its `helm install` lines, give a pod that
//!   serves, passes its probes and issues with the guide's admin credential, on a scratch
//!   PostgreSQL database of the test server (`HALLMARK_TEST_DATABASE_URL`) as `$DATABASE_URL`.
//!
//! `helm` and `kubernetes-validate` come from `scripts/chart-tools.sh` (run by scripts/test.sh):
//! `HALLMARK_HELM` and `HALLMARK_KUBERNETES_VALIDATE`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hallmark_ca::config::Config;
use hallmark_tests::postgres::PgScratch;
use hallmark_tests::{CaProcess, bin, openssl, s};
use serde_json::Value;

/// Kubernetes versions the rendered manifests are validated against: the chart's oldest
/// (`kubeVersion: >=1.31`) and the one of the helm client.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.31.0", "1.35.0"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set: run the tests with `bash scripts/test.sh`, which installs helm and \
             kubernetes-validate into target/tools (or `source scripts/chart-tools.sh && \
             hallmark_chart_tools` in this shell)"
        )
    });
    assert!(path.exists(), "{var}={} does not exist", path.display());
    path
}

/// Runs helm in the repository with its own (empty) config, cache and data directories.
fn helm(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(tool("HALLMARK_HELM"))
        .args(args)
        .current_dir(repo())
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("run helm")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template hallmark helm/hallmark -n hallmark ARGS`: the manifests.
fn render(args: &[&str]) -> String {
    let mut all = vec!["template", "hallmark", "helm/hallmark", "-n", "hallmark"];
    all.extend_from_slice(args);
    let out = helm(&all);
    assert!(out.status.success(), "helm {all:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The YAML documents as JSON, through the PyYAML of kubernetes-validate's venv.
fn objects(yaml: &str) -> Vec<Value> {
    let python = tool("HALLMARK_KUBERNETES_VALIDATE").with_file_name("python");
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "YAML to JSON failed");
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("not a list of documents: {other}"),
    }
}

/// `kubernetes-validate --strict` of `yaml` against every version; every object passes.
fn validate(yaml: &str, count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(tool("HALLMARK_KUBERNETES_VALIDATE"))
            .args(["--strict", "-k", version, s(&file)])
            .output()
            .unwrap();
        let said = text(&out);
        assert!(out.status.success(), "kubernetes {version}: {said}");
        assert_eq!(
            said.matches(" passed for resource ").count(),
            count,
            "{said}"
        );
    }
}

fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

/// The CA configuration of the rendered ConfigMap, read as `hallmark-ca` reads it.
fn ca_config(objects: &[Value]) -> Result<Config, String> {
    let toml = the(objects, "ConfigMap")["data"]["hallmark.toml"]
        .as_str()
        .expect("hallmark.toml in the ConfigMap");
    Config::parse(toml).map_err(|e| e.to_string())
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

/// Checks one rendering (release `hallmark` in namespace `hallmark`): `replicas`, PDB
/// `min_available`, whether anti-affinity and zone spreading are on.
fn check_rendering(yaml: &str, replicas: i64, min_available: i64, spread: bool) -> Vec<Value> {
    let objs = objects(yaml);
    validate(yaml, objs.len());
    let mut kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
    );
    // No key material and no Secret: the chart only names the operator's Secrets.
    for needle in ["PRIVATE KEY", "BEGIN CERTIFICATE", "postgres://"] {
        assert!(!yaml.contains(needle), "rendered manifests hold {needle}");
    }

    let deployment = the(&objs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], replicas);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let probe = strings(&c["startupProbe"]["exec"]["command"]);
    assert_eq!(probe[..2], ["/usr/local/bin/hallmark-ca", "probe"]);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["resources"]["limits"]["memory"].is_string());
    // The database URL only by reference.
    let env = &c["env"][0];
    assert_eq!(env["name"], "HALLMARK_DATABASE_URL");
    assert!(env.get("value").is_none());
    assert_eq!(
        env["valueFrom"]["secretKeyRef"]["name"],
        "hallmark-database"
    );
    let ports: Vec<(&str, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [("grpc", 9443), ("http", 9080)]);
    let anti =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(
        anti.is_array(),
        spread,
        "anti-affinity: {}",
        pod["affinity"]
    );
    assert_eq!(pod["topologySpreadConstraints"].is_array(), spread);

    let service = the(&objs, "Service");
    let ports: Vec<(&str, i64)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["port"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, [("grpc", 9443), ("http", 9080)]);
    assert_eq!(
        the(&objs, "PodDisruptionBudget")["spec"]["minAvailable"],
        min_available
    );
    let policy = &the(&objs, "NetworkPolicy")["spec"];
    assert_eq!(strings(&policy["policyTypes"]), ["Ingress", "Egress"]);
    let ingress = policy["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    let ports: Vec<&Value> = ingress[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["port"])
        .collect();
    assert_eq!(ports, ["grpc", "http"]);
    let egress: Vec<i64> = policy["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap())
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(egress, [53, 53, 5432]);

    // The configuration hallmark-ca reads: listeners inside the pod, CRLs and names of the
    // Service.
    let config = ca_config(&objs).expect("hallmark-ca accepts the rendered configuration");
    assert_eq!(config.grpc_listen.to_string(), "0.0.0.0:9443");
    assert_eq!(config.http_listen.to_string(), "0.0.0.0:9080");
    assert_eq!(
        config.crl_base_url.as_deref(),
        Some("http://hallmark.hallmark.svc.cluster.local:9080")
    );
    assert_eq!(
        config.server_names,
        [
            "hallmark",
            "hallmark.hallmark",
            "hallmark.hallmark.svc",
            "hallmark.hallmark.svc.cluster.local"
        ]
    );
    objs
}

#[test]
fn lint_render_and_validate_default_and_ha_values() {
    for extra in [&[][..], &["-f", "helm/hallmark/values-ha.yaml"][..]] {
        let mut args = vec!["lint", "--strict", "helm/hallmark"];
        args.extend_from_slice(extra);
        let out = helm(&args);
        assert!(out.status.success(), "helm {args:?}: {}", text(&out));
        assert!(text(&out).contains("0 chart(s) failed"), "{}", text(&out));
    }
    check_rendering(&render(&[]), 2, 1, false);
    check_rendering(&render(&["-f", "helm/hallmark/values-ha.yaml"]), 3, 2, true);
    // A release of another name in another namespace: the names follow.
    let objs = objects(&render(&[
        "--namespace",
        "plant4",
        "--set",
        "fullnameOverride=ca",
    ]));
    let config = ca_config(&objs).unwrap();
    assert_eq!(
        config.crl_base_url.as_deref(),
        Some("http://ca.plant4.svc.cluster.local:9080")
    );
    assert!(config.server_names.iter().any(|n| n == "ca.plant4.svc"));
}

/// `helm lint` and `helm template` both refuse `args`, saying `needle`.
fn refused(case: &str, args: &[&str], needle: &str) {
    for verb in [
        &["lint", "--strict", "helm/hallmark"][..],
        &["template", "x", "helm/hallmark"][..],
    ] {
        let mut all = verb.to_vec();
        all.extend_from_slice(args);
        let out = helm(&all);
        let said = text(&out);
        assert!(!out.status.success(), "{case}: helm {all:?} accepted it");
        assert!(
            said.contains(needle),
            "{case}: helm {all:?} should say `{needle}`: {said}"
        );
    }
}

#[test]
fn bad_values_are_refused_and_strings_cannot_inject_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let two = file("two.yaml", "replicaCount: \"two\"\n");
    refused(
        "replicas as text",
        &["-f", &two],
        "at '/replicaCount': got string, want integer",
    );
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown key",
            "replicas=3",
            "additional properties 'replicas' not allowed",
        ),
        (
            "misspelt nested key",
            "config.organization=x",
            "'organization' not allowed",
        ),
        (
            "root",
            "podSecurityContext.runAsUser=0",
            "/podSecurityContext/runAsUser",
        ),
        (
            "root allowed",
            "podSecurityContext.runAsNonRoot=false",
            "/podSecurityContext/runAsNonRoot",
        ),
        (
            "writable root fs",
            "securityContext.readOnlyRootFilesystem=false",
            "/securityContext/readOnlyRootFilesystem",
        ),
        (
            "privilege escalation",
            "securityContext.allowPrivilegeEscalation=true",
            "/securityContext/allowPrivilegeEscalation",
        ),
        (
            "privileged",
            "securityContext.privileged=true",
            "/securityContext/privileged",
        ),
        (
            "a capability",
            "securityContext.capabilities.add={NET_ADMIN}",
            "/securityContext/capabilities/add",
        ),
        (
            "not dropping ALL",
            "securityContext.capabilities.drop={NET_RAW}",
            "/securityContext/capabilities/drop",
        ),
        (
            "no seccomp",
            "securityContext.seccompProfile.type=Unconfined",
            "/securityContext/seccompProfile/type",
        ),
        (
            "CRL URL scheme",
            "config.crlBaseUrl=ftp://ca.example",
            "/config/crlBaseUrl",
        ),
        (
            "URI template",
            "config.deviceUriTemplate=urn:x",
            "/config/deviceUriTemplate",
        ),
        (
            "duration",
            "config.crlValidity=one day",
            "/config/crlValidity",
        ),
        (
            "server name",
            "config.extraServerNames={a b}",
            "/config/extraServerNames/0",
        ),
        (
            "no issuer Secret",
            "issuer.existingSecret=",
            "/issuer/existingSecret",
        ),
        (
            "port",
            "networkPolicy.database.port=70000",
            "/networkPolicy/database/port",
        ),
        ("service type", "service.type=ExternalName", "/service/type"),
    ];
    for (case, set, needle) in cases {
        refused(case, &["--set", set], needle);
    }
    // A check across two values is the template's (`fail`), which `helm lint` only logs:
    // `helm template` (and so `helm install`) refuses.
    let out = helm(&[
        "template",
        "x",
        "helm/hallmark",
        "--set",
        "podDisruptionBudget.minAvailable=2",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("minAvailable (2) must be below replicaCount (2)"),
        "{}",
        text(&out)
    );

    // Text values are quoted into the TOML: a newline and quotes stay in the value.
    let sneaky = file(
        "sneaky.yaml",
        "config:\n  organisation: \"ACME\\\"\\ngrpc_listen = \\\"127.0.0.1:1\"\n",
    );
    let objs = objects(&render(&["-f", &sneaky]));
    let config = ca_config(&objs).unwrap();
    assert_eq!(config.organisation, "ACME\"\ngrpc_listen = \"127.0.0.1:1");
    assert_eq!(config.grpc_listen.to_string(), "0.0.0.0:9443");
    // `config.extra` cannot move a listener: a second key is refused by hallmark-ca at start.
    let extra = file(
        "extra.yaml",
        "config:\n  extra: |\n    grpc_listen = \"0.0.0.0:1\"\n",
    );
    let err = ca_config(&objects(&render(&["-f", &extra]))).unwrap_err();
    assert!(err.contains("grpc_listen"), "{err}");
}

/// The README's "Install on Kubernetes (Helm)" section.
fn guide() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("## Install on Kubernetes (Helm)")
        .expect("the README's Helm section");
    let rest = &readme[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_owned()
}

/// The guide's command lines starting with `prefix`, split into words.
fn commands(guide: &str, prefix: &str) -> Vec<Vec<String>> {
    guide
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(words)
        .collect()
}

/// A command line split into words as sh splits it (spaces; single and double quotes).
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for ch in line.chars() {
        match (quote, ch) {
            (None, '"' | '\'') => {
                quote = Some(ch);
                word.get_or_insert_default();
            }
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => words.extend(word.take()),
            (_, c) => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    words
}

/// Files of `kubectl create secret generic NAME --from-file=...`, as kubectl makes them: a
/// directory gives each regular file in it under its name, a file its name or the given key.
fn secret_data(cmd: &[String], cwd: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::new();
    for arg in cmd {
        if let Some(source) = arg.strip_prefix("--from-file=") {
            let (key, path) = match source.split_once('=') {
                Some((k, p)) => (Some(k.to_owned()), cwd.join(p)),
                None => (None, cwd.join(source)),
            };
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    let entry = entry.unwrap();
                    if entry.file_type().unwrap().is_file() {
                        let name = entry.file_name().into_string().unwrap();
                        data.insert(name, std::fs::read(entry.path()).unwrap());
                    }
                }
            } else {
                let name =
                    key.unwrap_or_else(|| path.file_name().unwrap().to_str().unwrap().to_owned());
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("the guide's Secret takes {}: {e}", path.display()));
                data.insert(name, bytes);
            }
        } else if let Some(literal) = arg.strip_prefix("--from-literal=") {
            let (k, v) = literal.split_once('=').unwrap();
            data.insert(k.to_owned(), v.as_bytes().to_vec());
        }
    }
    data
}

/// Lays out what the pod's container sees under `root`: every volume mount of the rendered
/// Deployment, filled as the kubelet fills it (emptyDir, Secret with items, ConfigMap, subPath).
fn mount_volumes(
    objs: &[Value],
    secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    root: &Path,
) -> Vec<String> {
    let pod = &the(objs, "Deployment")["spec"]["template"]["spec"];
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let config_maps: BTreeMap<&str, BTreeMap<String, Vec<u8>>> = objs
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .map(|o| {
            let data = o["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
                .collect();
            (o["metadata"]["name"].as_str().unwrap(), data)
        })
        .collect();
    let mut mounts: Vec<&Value> = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    // Outer mounts first: the data dir's emptyDir, then what is mounted inside it.
    mounts.sort_by_key(|m| m["mountPath"].as_str().unwrap().len());
    let mut paths = Vec::new();
    for m in mounts {
        let path = m["mountPath"].as_str().unwrap();
        let target = root.join(path.trim_start_matches('/'));
        let volume = volumes[m["name"].as_str().unwrap()];
        let files = if volume.get("emptyDir").is_some() {
            std::fs::create_dir_all(&target).unwrap();
            paths.push(path.to_owned());
            continue;
        } else if let Some(secret) = volume.get("secret") {
            let name = secret["secretName"].as_str().unwrap();
            (
                secrets
                    .get(name)
                    .unwrap_or_else(|| {
                        panic!("the pod mounts Secret {name}, which the guide never creates")
                    })
                    .clone(),
                &secret["items"],
            )
        } else if let Some(cm) = volume.get("configMap") {
            (
                config_maps[cm["name"].as_str().unwrap()].clone(),
                &cm["items"],
            )
        } else {
            panic!("unexpected volume {volume}");
        };
        let (data, items) = files;
        let data: BTreeMap<String, Vec<u8>> = match items.as_array() {
            None => data,
            Some(items) => items
                .iter()
                .map(|i| {
                    let key = i["key"].as_str().unwrap();
                    let bytes = data
                        .get(key)
                        .unwrap_or_else(|| panic!("no key {key}"))
                        .clone();
                    (i["path"].as_str().unwrap().to_owned(), bytes)
                })
                .collect(),
        };
        match m.get("subPath").and_then(Value::as_str) {
            Some(sub) => {
                let bytes = data
                    .get(sub)
                    .unwrap_or_else(|| panic!("{path}: subPath {sub} is not in the volume"));
                std::fs::write(&target, bytes).unwrap();
            }
            None => {
                std::fs::create_dir_all(&target).unwrap();
                for (k, v) in &data {
                    std::fs::write(target.join(k), v).unwrap();
                }
            }
        }
        paths.push(path.to_owned());
    }
    paths
}

#[test]
fn readme_guide_gives_pods_that_serve() {
    let guide = guide();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();

    // Step 3: init.toml, the passphrase and `hallmark-ca init`, as written.
    let heredoc = "cat > init.toml <<'EOF'\n";
    let toml_start = guide.find(heredoc).expect("init.toml in the guide") + heredoc.len();
    let toml_len = guide[toml_start..].find("EOF\n").unwrap();
    let init_toml: String = guide[toml_start..toml_start + toml_len]
        .lines()
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    std::fs::write(work.join("init.toml"), &init_toml).unwrap();
    let pass_line = guide
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with("> passphrase"))
        .expect("the passphrase line");
    let out = Command::new("sh")
        .args(["-c", pass_line])
        .current_dir(work)
        .output()
        .unwrap();
    assert!(out.status.success(), "{pass_line}: {}", text(&out));
    let init = commands(&guide, "hallmark-ca init ");
    assert_eq!(init.len(), 1, "one init in the guide");
    let mut args: Vec<String> = init[0][1..].to_vec();
    // `$DATABASE_URL` is a scratch database on the test server.
    let db = PgScratch::new();
    let url = db.url();
    let at = args
        .iter()
        .position(|a| a == "--database-url")
        .expect("the guide initialises against the database");
    assert_eq!(args[at + 1], "$DATABASE_URL");
    args[at + 1] = url.clone();
    let out = Command::new(bin("hallmark-ca"))
        .args(&args)
        .current_dir(work)
        .env_remove("HALLMARK_CA_PASSPHRASE")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "hallmark-ca {args:?}: {}", text(&out));
    assert!(
        !work.join("ca/ca/root.key").exists(),
        "the root key stays out of the Secret"
    );

    // Step 4: the Secrets.
    let mut secrets = BTreeMap::new();
    for cmd in commands(&guide, "kubectl -n hallmark create secret generic ") {
        let mut data = secret_data(&cmd, work);
        for v in data.values_mut() {
            if v == b"$DATABASE_URL" {
                *v = url.clone().into_bytes();
            }
        }
        secrets.insert(cmd[6].clone(), data);
    }
    let issuer = &secrets["hallmark-issuer"];
    for key in [
        "issuing.crt",
        "issuing.key",
        "root.crt",
        "trust-bundle.pem",
        ".initialised",
    ] {
        assert!(
            issuer.contains_key(key),
            "hallmark-issuer lacks {key}: {:?}",
            issuer.keys()
        );
    }
    let issuing_cdp = openssl(&[
        "x509",
        "-in",
        s(&work.join("ca/ca/issuing.crt")),
        "-noout",
        "-ext",
        "crlDistributionPoints",
    ]);

    // Step 5: every `helm install` line, rendered and run as the pod would run.
    let installs = commands(&guide, "helm install ");
    assert_eq!(installs.len(), 2, "single-plant and HA installs");
    for install in installs {
        let mut args: Vec<&str> = install[1..].iter().map(String::as_str).collect();
        args[0] = "template";
        let out = helm(&args);
        assert!(out.status.success(), "helm {args:?}: {}", text(&out));
        let yaml = String::from_utf8(out.stdout).unwrap();
        let objs = objects(&yaml);
        validate(&yaml, objs.len());
        let config = ca_config(&objs).unwrap();
        let crl_base = config.crl_base_url.clone().unwrap();
        // The CA certificates made at init carry the chart's CRL address.
        assert!(
            issuing_cdp.contains(&format!("URI:{crl_base}/crl/root-")),
            "{issuing_cdp}"
        );

        let pod = tempfile::tempdir().unwrap();
        let mounts = mount_volumes(&objs, &secrets, pod.path());
        let in_pod = |arg: &str| -> String {
            if arg == "/usr/local/bin/hallmark-ca" {
                return s(&bin("hallmark-ca")).to_owned();
            }
            match mounts.iter().any(|m| arg.starts_with(m.as_str())) {
                true => s(&pod.path().join(arg.trim_start_matches('/'))).to_owned(),
                false => arg.to_owned(),
            }
        };
        let container = &the(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        let run: Vec<String> = strings(&container["args"])
            .into_iter()
            .map(in_pod)
            .collect();
        assert_eq!(run[..2], ["serve", "--data-dir"]);
        let data_dir = PathBuf::from(&run[2]);
        assert!(!data_dir.join("hallmark.db").exists());
        // The environment as rendered: the database URL from its Secret.
        let mut serve = Command::new(bin("hallmark-ca"));
        for var in container["env"].as_array().unwrap() {
            let name = var["name"].as_str().unwrap();
            let value = match &var["valueFrom"]["secretKeyRef"] {
                Value::Null => var["value"].as_str().unwrap().as_bytes().to_vec(),
                r => secrets[r["name"].as_str().unwrap()][r["key"].as_str().unwrap()].clone(),
            };
            serve.env(name, String::from_utf8(value).unwrap());
        }
        let extra: Vec<&str> = run[3..].iter().map(String::as_str).collect();
        let ca = CaProcess::start_through(serve, &data_dir, ("127.0.0.1:0", "127.0.0.1:0"), &extra);
        assert!(
            !data_dir.join("hallmark.db").exists(),
            "the pod used SQLite"
        );

        // It made its own API certificate for the Service's names, in the writable data dir.
        let names = openssl(&[
            "x509",
            "-in",
            s(&data_dir.join("server/cert.pem")),
            "-noout",
            "-ext",
            "subjectAltName",
        ]);
        assert!(
            names.contains("DNS:hallmark.hallmark.svc.cluster.local"),
            "{names}"
        );
        // The startup probe, as rendered (the port is the one this CA got).
        let port = ca
            .var("HALLMARK_ENDPOINT")
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
        let probe: Vec<String> = strings(&container["startupProbe"]["exec"]["command"])
            .into_iter()
            .map(|a| match a {
                "127.0.0.1:9443" => format!("127.0.0.1:{port}"),
                other => in_pod(other),
            })
            .collect();
        let out = Command::new(&probe[0]).args(&probe[1..]).output().unwrap();
        assert!(out.status.success(), "{probe:?}: {}", text(&out));
        for p in ["readinessProbe", "livenessProbe"] {
            let path = container[p]["httpGet"]["path"].as_str().unwrap();
            let answer = ca.http_get(path);
            assert!(answer.starts_with("HTTP/1.1 200"), "{p} {path}: {answer}");
        }
        // The guide's admin credential works against the pod; what it issues names the
        // Service's CRL address.
        let out_dir = pod.path().join("sensor-1");
        let out = ca.hallmark_as(
            &work.join("ca/admin"),
            &[
                "cert",
                "issue",
                "--device",
                "sensor-1",
                "--profile",
                "sensor",
                "--generate-key",
                "--out",
                s(&out_dir),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let cdp = openssl(&[
            "x509",
            "-in",
            s(&out_dir.join("cert.pem")),
            "-noout",
            "-ext",
            "crlDistributionPoints",
        ]);
        assert!(
            cdp.contains(&format!("URI:{crl_base}/crl/issuing-")),
            "{cdp}"
        );
        drop(ca);
    }
}

#[test]
fn the_image_runs_what_the_chart_expects() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for needle in [
        "cargo build --release --locked -p hallmark-ca",
        "/usr/local/bin/hallmark-ca",
        "USER 10001:10001",
        "EXPOSE 9443 9080",
        "ENTRYPOINT [\"/usr/local/bin/hallmark-ca\"]",
    ] {
        assert!(
            dockerfile.contains(needle),
            "the Dockerfile lacks `{needle}`"
        );
    }
}
