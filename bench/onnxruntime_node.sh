# Sourced by the benchmarks that run ONNX Runtime beside Runnel: installs the npm
# package onnxruntime-node (pinned) under $1/node once. The CPU runtime is inside the
# package; its install script would otherwise fetch a CUDA one.
install_onnxruntime_node() {
  if [ ! -d "$1/node/node_modules/onnxruntime-node" ]; then
    ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install --prefix "$1/node" --no-save --silent \
      --onnxruntime-node-install-cuda=skip onnxruntime-node@1.20.1
  fi
}
