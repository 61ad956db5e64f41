# Sourced by the benchmarks that run Runnel beside peer runtimes (ONNX Runtime,
# scikit-learn, XGBoost).

# Installs the npm package onnxruntime-node (pinned) under $1/node once. The CPU runtime
# is inside the package; its install script would otherwise fetch a CUDA one.
install_onnxruntime_node() {
  if [ ! -d "$1/node/node_modules/onnxruntime-node" ]; then
    ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install --prefix "$1/node" --no-save --silent \
      --onnxruntime-node-install-cuda=skip onnxruntime-node@1.20.1
  fi
}

# Calls the caller's functions `runnel` and `peers` ROUNDS times (default 2), which one
# runs first alternating: the machine's drift falls on both sides alike.
alternate_rounds() {
  for round in $(seq "${ROUNDS:-2}"); do
    echo "== round $round"
    if [ $((round % 2)) -eq 1 ]; then runnel; peers; else peers; runnel; fi
  done
}
