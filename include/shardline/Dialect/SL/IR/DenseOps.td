//===- DenseOps.td - norms, linear layers, elementwise ops ---*- tablegen -*-===//
//
// The dense MLP (F) family and the ops every family shares.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_DENSEOPS_TD
#define SHARDLINE_DIALECT_SL_IR_DENSEOPS_TD

def SL_RMSNormOp : SL_ComputeOp<"rms_norm", [AllShapesMatch<["x", "result"]>], [],
                                 SL_Differentiable> {
  let summary = "RMSNorm over the last dimension: x / rms(x) * w";
  let description = [{ Rule: leading dims free; the normalised dimension whole; nonlinear. }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weight,
                   DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs SL_FloatTensor:$result);
}

def SL_LinearOp : SL_ComputeOp<"linear", [], [], SL_Differentiable> {
  let summary = "Matrix product with a weight: x[..., k] * w[k, n] -> [..., n]";
  let description = [{
    Rule: leading dims free, n free (column-parallel), k contracted
    (row-parallel gives a pending sum). Linear in x.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weight);
  let results = (outs SL_FloatTensor:$result);
}

def SL_AddOp : SL_ElementwiseOp<"add", "Elementwise sum (residual add)", 2>;
def SL_MulOp : SL_ElementwiseOp<"mul", "Elementwise product", 2>;
def SL_SwiGLUOp : SL_ElementwiseOp<"swiglu", "silu(lhs) * rhs", 2>;
def SL_SiLUOp : SL_ElementwiseOp<"silu", "x * sigmoid(x)", 1>;
def SL_GeLUOp : SL_ElementwiseOp<"gelu", "GeLU (erf form)", 1>;
def SL_SigmoidOp : SL_ElementwiseOp<"sigmoid", "1 / (1 + exp(-x))", 1>;
def SL_SoftplusOp : SL_ElementwiseOp<"softplus", "log(1 + exp(x))", 1>;

#endif
