#ifndef SHARDLINE_DIALECT_SL_IR_SLBASE_TD
#define SHARDLINE_DIALECT_SL_IR_SLBASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def SL_Dialect : Dialect {
  let name = "sl";
  let cppNamespace = "::mlir::sl";
  let summary = "Hybrid language-model graphs with sequence/context-parallel layouts";
  let description = [{
    Ops for the primitives of attention, Mamba-2, mixture-of-experts, RG-LRU
    and dense MLP blocks, the model's ends, and the layout transitions
    (collectives, local slices, sequence reorders, context-parallel
    exchanges). Tensors carry a `#sl.layout` encoding that names, for each
    dimension, the mesh axes that split it, the axes over which the value is
    a pending sum, and the chunk order of the sequence dimension.
  }];
  let useDefaultAttributePrinterParser = 1;
  // The discardable attributes (sl.reason, sl.cp_comm, ...; names in SL.h)
  // are declared: their types and values are checked wherever they appear.
  let hasOperationAttrVerify = 1;
  let hasRegionArgAttrVerify = 1;
  let hasRegionResultAttrVerify = 1;
  let dependentDialects = ["::mlir::func::FuncDialect"];
  let extraClassDeclaration = [{
    void registerAttributes();
  }];
}

class SL_Op<string mnemonic, list<Trait> traits = []>
    : Op<SL_Dialect, mnemonic, traits>;

#endif
