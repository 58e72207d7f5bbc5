//===- SL.td - the Shardline dialect -----------------------*- tablegen -*-===//
//
// The `sl` dialect describes a hybrid language model in the global view:
// tensors carry their global shapes and, as a type encoding, the layout that
// says how the mesh splits them. Every layout change is an explicit op.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_SL_TD
#define SHARDLINE_DIALECT_SL_IR_SL_TD

include "shardline/Dialect/SL/IR/SLBase.td"
include "shardline/Dialect/SL/IR/SLAttrs.td"
include "shardline/Dialect/SL/IR/SLInterfaces.td"
include "shardline/Dialect/SL/IR/SLOps.td"

#endif
