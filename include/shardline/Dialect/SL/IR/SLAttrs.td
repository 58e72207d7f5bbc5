#ifndef SHARDLINE_DIALECT_SL_IR_SLATTRS_TD
#define SHARDLINE_DIALECT_SL_IR_SLATTRS_TD

include "shardline/Dialect/SL/IR/SLBase.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"

def SL_ChunkOrder : I32EnumAttr<"ChunkOrder", "order of sequence chunks across ranks", [
    I32EnumAttrCase<"contiguous", 0>,
    I32EnumAttrCase<"zigzag", 1>]> {
  let cppNamespace = "::mlir::sl";
  let genSpecializedAttr = 0;
}

def SL_CPComm : I32EnumAttr<"CPComm",
    "how attention exchanges keys and values under context parallelism", [
    I32EnumAttrCase<"Ring", 0, "ring">,
    I32EnumAttrCase<"AllGather", 1, "allgather">,
    I32EnumAttrCase<"A2A", 2, "a2a">,
    I32EnumAttrCase<"Auto", 3, "auto">]> {
  let cppNamespace = "::mlir::sl";
  let genSpecializedAttr = 0;
}

def SL_LayoutAttr : AttrDef<SL_Dialect, "Layout"> {
  let mnemonic = "layout";
  let summary = "How a tensor is distributed over a mesh";
  let description = [{
    A tensor-type encoding. `dims` has one axis list per tensor dimension,
    major to minor: `[cp, tp]` on a dimension of size n means cp splits it into
    cp blocks and tp splits each block again. `partial` lists the axes over
    which the value is a pending sum (each rank holds an addend). A chunk order
    may follow the axis list of the sequence dimension: `contiguous` (rank r of
    the axes holds block r) or `zigzag` (the dimension is cut into 2n chunks
    and rank r holds chunks r and 2n-1-r, balancing causal attention).

    ```
    tensor<2x256x128xf32, #sl.layout<@mesh, [[ep], [cp, tp] zigzag, []]>>
    tensor<2x256x128xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>
    ```
  }];
  let parameters = (ins
    "::mlir::FlatSymbolRefAttr":$mesh,
    "::mlir::ArrayAttr":$dims,
    "::mlir::ArrayAttr":$partial,
    "int64_t":$orderDim,
    "::mlir::sl::ChunkOrder":$order);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Axes that split dimension `dim`, major to minor.
    ::llvm::SmallVector<::llvm::StringRef> getDimAxes(unsigned dim) const;
    /// Axes of the pending sum.
    ::llvm::SmallVector<::llvm::StringRef> getPartialAxes() const;
    /// The chunk order of dimension `dim` (contiguous unless stated).
    ::mlir::sl::ChunkOrder getDimOrder(unsigned dim) const;
    unsigned getRank() const { return getDims().size(); }
    bool isReplicated() const;
    /// The same layout with other axis lists, partial axes or order.
    static LayoutAttr get(::mlir::MLIRContext *ctx, ::mlir::FlatSymbolRefAttr mesh,
                          ::llvm::ArrayRef<::llvm::SmallVector<std::string>> dims,
                          ::llvm::ArrayRef<std::string> partial, int64_t orderDim,
                          ::mlir::sl::ChunkOrder order);
  }];
}

#endif
