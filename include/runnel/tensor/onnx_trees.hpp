// ONNX tree ensembles (ai.onnx.ml TreeEnsembleRegressor, TreeEnsembleClassifier)
// compiled into a TreeEnsemble: the general runtime's kernels run it, and the model
// module serves a graph that is only an ensemble straight from it.
#pragma once

#include <memory>

#include "runnel/tensor/graph.hpp"
#include "runnel/tensor/trees.hpp"

namespace runnel::tensor {

// The ensemble of a TreeEnsembleRegressor or TreeEnsembleClassifier node, for rows of
// `features` columns (0: as many as its splits read). Outputs per row as
// TreeEnsemble says: a regressor's targets; a classifier's label (an int64 label, or
// a string label's index into classlabels_strings) then one probability per class.
// Throws Error(Model) naming the tree and node at fault, UnsupportedError for an
// aggregate, mode or post_transform it lacks (MIN, MAX, PROBIT).
std::shared_ptr<const trees::TreeEnsemble> OnnxTreeEnsemble(const Node& node, size_t features);

}  // namespace runnel::tensor
