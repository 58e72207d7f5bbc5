//===- TrainingOps.td - backward and optimizer ops --------*- tablegen -*-===//
//
// The gradients of the dense families' forward ops and the AdamW update that
// sl-autodiff emits. Each states its rule like the forward ops, so the layout
// passes, sl-partition, the report and the plan treat them alike.
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_TRAININGOPS_TD
#define SHARDLINE_DIALECT_SL_IR_TRAININGOPS_TD

def SL_RMSNormGradOp : SL_ComputeOp<"rms_norm_grad", [AllShapesMatch<["x", "dy", "dx"]>]> {
  let summary = "Gradient of sl.rms_norm with respect to its input";
  let description = [{
    With r = 1/sqrt(mean_c x^2 + eps) per token:
    dx = r * w * dy - x * r^3 * mean_c(x * w * dy).
    Rule: leading dims free; the normalised dimension h whole; nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weight, SL_FloatTensor:$dy,
                   DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs SL_FloatTensor:$dx);
}

def SL_RMSNormGradWeightOp : SL_ComputeOp<"rms_norm_grad_weight", [AllShapesMatch<["x", "dy"]>]> {
  let summary = "Gradient of sl.rms_norm with respect to its weight";
  let description = [{
    dweight[c] = sum over tokens t of dy[t, c] * x[t, c] * r[t], with r as in
    sl.rms_norm_grad. Rule: leading (token) dims contracted, so tokens split
    over axes leave a pending sum over them; h whole; nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$dy,
                   DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let results = (outs SL_FloatTensor:$dweight);
}

def SL_LinearGradOp : SL_ComputeOp<"linear_grad"> {
  let summary = "Gradient of sl.linear with respect to x: dy[..., n] * w[k, n]^T";
  let description = [{
    dx = dy * weight^T. Rule: leading dims free, k free, n contracted (a
    column-parallel forward gives a pending sum here). Linear in each operand.
  }];
  let arguments = (ins SL_FloatTensor:$dy, SL_FloatTensor:$weight);
  let results = (outs SL_FloatTensor:$dx);
}

def SL_LinearGradWeightOp : SL_ComputeOp<"linear_grad_weight"> {
  let summary = "Gradient of sl.linear with respect to its weight: sum_t x[t]^T dy[t]";
  let description = [{
    dweight[k, n] = sum over tokens t of x[t, k] * dy[t, n]. Rule: leading
    (token) dims contracted (data or sequence parallelism gives a pending sum
    over their axes), k and n free. Linear in each operand.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$dy);
  let results = (outs SL_FloatTensor:$dweight);
}

def SL_SwiGLUGradOp : SL_ComputeOp<"swiglu_grad",
    [AllShapesMatch<["lhs", "rhs", "dy", "dlhs", "drhs"]>]> {
  let summary = "Gradient of sl.swiglu (silu(lhs) * rhs)";
  let description = [{
    With s = sigmoid(lhs): dlhs = dy * rhs * s * (1 + lhs * (1 - s)),
    drhs = dy * lhs * s. Rule: every dimension free; operands and results
    share one layout; nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$lhs, SL_FloatTensor:$rhs, SL_FloatTensor:$dy);
  let results = (outs SL_FloatTensor:$dlhs, SL_FloatTensor:$drhs);
}

class SL_UnaryGradOp<string mnemonic, string summ, string math>
    : SL_ComputeOp<mnemonic, [AllShapesMatch<["x", "dy", "dx"]>]> {
  let summary = summ;
  let description = math # [{
    Rule: every dimension free; operands and result share one layout;
    nonlinear.
  }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$dy);
  let results = (outs SL_FloatTensor:$dx);
}

def SL_SiLUGradOp : SL_UnaryGradOp<"silu_grad", "Gradient of sl.silu",
    "dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x).">;
def SL_GeLUGradOp : SL_UnaryGradOp<"gelu_grad", "Gradient of sl.gelu (erf form)",
    "dx = dy * (Phi(x) + x * phi(x)), Phi and phi the normal CDF and density.">;
def SL_SigmoidGradOp : SL_UnaryGradOp<"sigmoid_grad", "Gradient of sl.sigmoid",
    "dx = dy * s * (1 - s), s = sigmoid(x).">;
def SL_SoftplusGradOp : SL_UnaryGradOp<"softplus_grad", "Gradient of sl.softplus",
    "dx = dy * sigmoid(x).">;

def SL_RopeGradOp : SL_ComputeOp<"rope_grad", [AllShapesMatch<["dy", "dx"]>],
    ["resolveRankFacts"]> {
  let summary = "Gradient of sl.rope: the inverse rotation";
  let description = [{
    Rotates the pairs (i, i + head_dim/2) of every head by -position *
    theta^(-2i/head_dim), the transpose of sl.rope's rotation at the same
    global positions. Rule: as sl.rope (b, s free; heads free in whole
    heads); linear.
  }];
  let arguments = (ins SL_FloatTensor:$dy, I64Attr:$head_dim,
                   DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs SL_FloatTensor:$dx);
}

def SL_AttentionGradOp : SL_ComputeOp<"attention_grad",
    [AllShapesMatch<["k", "v"]>, AllShapesMatch<["q", "dy", "dq"]>],
    ["resolveRankFacts"]> {
  let summary = "Gradient of sl.attention with respect to the queries";
  let description = [{
    With P the forward's softmax over the visible keys, dP = dy * v^T and
    dS = P o (dP - rowsum(P o dP)): dq = scale * dS * k. Rule: as
    sl.attention (b, query positions s, heads free, heads split in whole kv
    groups; head_dim whole) but the key positions t may not be split (no
    remedy: K and V are gathered first); dy is laid out like q.
  }];
  let arguments = (ins SL_FloatTensor:$q, SL_FloatTensor:$k, SL_FloatTensor:$v,
                   SL_FloatTensor:$dy, I64Attr:$heads, I64Attr:$kv_heads,
                   DefaultValuedAttr<BoolAttr, "true">:$causal,
                   OptionalAttr<F64Attr>:$scale);
  let results = (outs SL_FloatTensor:$dq);
}

def SL_AttentionGradKVOp : SL_ComputeOp<"attention_grad_kv",
    [AllShapesMatch<["k", "v", "dk", "dv"]>, AllShapesMatch<["q", "dy"]>],
    ["resolveRankFacts"]> {
  let summary = "Gradient of sl.attention with respect to the keys and values";
  let description = [{
    With P and dS as in sl.attention_grad: dk = scale * dS^T * q and
    dv = P^T * dy, each summed over the query heads that share a kv head.
    Rule: as sl.attention_grad, but the query positions s are contracted:
    dk and dv are pending sums over the axes that split the queries'
    sequence; they are laid out like k and v.
  }];
  let arguments = (ins SL_FloatTensor:$q, SL_FloatTensor:$k, SL_FloatTensor:$v,
                   SL_FloatTensor:$dy, I64Attr:$heads, I64Attr:$kv_heads,
                   DefaultValuedAttr<BoolAttr, "true">:$causal,
                   OptionalAttr<F64Attr>:$scale);
  let results = (outs SL_FloatTensor:$dk, SL_FloatTensor:$dv);
}

def SL_EmbeddingGradOp : SL_ComputeOp<"embedding_grad", [AllShapesMatch<["table", "dtable"]>],
    ["resolveRankFacts"]> {
  let summary = "Gradient of sl.embedding with respect to its table";
  let description = [{
    dtable[r, :] = sum of dy[t, :] over the tokens t with ids[t] = r (the
    rows this rank owns). The table's values are not read: it gives the
    shape and the layout. Rule: b, s contracted (a pending sum over the axes
    that split the tokens); v, h free. Linear in dy, which may be a pending
    sum.
  }];
  let arguments = (ins SL_IndexTensor:$ids, SL_FloatTensor:$dy, SL_FloatTensor:$table);
  let results = (outs SL_FloatTensor:$dtable);
}

def SL_CrossEntropyGradOp : SL_ComputeOp<"cross_entropy_grad",
    [AllShapesMatch<["logits", "dlogits"]>],
    ["applyRemedy", "resolveRankFacts", "sentBytesPerRank"]> {
  let summary = "Gradient of sl.cross_entropy's mean loss with respect to the logits";
  let description = [{
    dlogits[t, v] = (softmax(logits)[t, v] - [labels[t] = v]) / (B * S),
    B * S the global token count. Rule: b, s free; dlogits laid out like the
    logits; the vocabulary split only over `vocab_axes` (vocab-parallel: the
    per-token max and sum of exponentials are all-reduced over those axes,
    as in the forward).
  }];
  let arguments = (ins SL_FloatTensor:$logits, SL_IndexTensor:$labels,
                   DefaultValuedAttr<StrArrayAttr, "{}">:$vocab_axes);
  let results = (outs SL_FloatTensor:$dlogits);
}

def SL_SumSquaresOp : SL_ComputeOp<"sum_squares"> {
  let summary = "Sum of the squares of every element (a gradient's squared norm)";
  let description = [{
    x -> f32 scalar sum of x^2. Rule: every dimension free; reduces to a
    scalar, a pending sum over the axes that split x.
  }];
  let arguments = (ins SL_FloatTensor:$x);
  let results = (outs 0DTensorOf<[F32]>:$result);
}

def SL_AdamWOp : SL_UpdateOp<"adamw", [AllShapesMatch<["weight", "grad", "m", "v"]>]> {
  let summary = "AdamW update of a weight and its moments, in place";
  let description = [{
    At step t with the run's lr, beta1, beta2, eps, weight_decay and
    clip_grad: scale = min(1, clip_grad / (sqrt(sumsq) + 1e-6)) (1 when
    clip_grad is 0), g = grad * scale, m = beta1 m + (1 - beta1) g,
    v = beta2 v + (1 - beta2) g^2, and
    weight -= lr (m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + eps)
                  + (decay ? weight_decay * weight : 0)).
    sumsq is the sum of squares of every gradient of the model. Writes
    weight, m and v in place, so it has no results and is never erased or
    moved. Does nothing in a run without training hyperparameters.
    A 16-bit weight needs `main`, its f32 main copy (mixed precision as
    Megatron's --bf16 runs it): the update above applies to main, in f32
    with f32 moments, and the weight becomes main rounded to its type.
    Without `main`, weight, grad, m and v are f32.
    Rule: weight, grad, m, v, main every dimension free, one layout; sumsq
    replicated; nonlinear (grad may not be a pending sum).
  }];
  let arguments = (ins Arg<SL_FloatTensor, "", [MemRead, MemWrite]>:$weight,
                   SL_FloatTensor:$grad,
                   Arg<SL_FloatTensor, "", [MemRead, MemWrite]>:$m,
                   Arg<SL_FloatTensor, "", [MemRead, MemWrite]>:$v,
                   0DTensorOf<[F32]>:$sumsq,
                   Arg<Optional<SL_FloatTensor>, "", [MemRead, MemWrite]>:$main,
                   DefaultValuedAttr<BoolAttr, "true">:$decay);
}

#endif
