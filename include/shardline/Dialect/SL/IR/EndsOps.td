//===- EndsOps.td - the model's ends -----------------------*- tablegen -*-===//
//
// The embedding, the LM head and the loss (vocab parallelism).
// Included by SLOps.td, which defines the op classes.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_DIALECT_SL_IR_ENDSOPS_TD
#define SHARDLINE_DIALECT_SL_IR_ENDSOPS_TD

def SL_EmbeddingOp : SL_ComputeOp<"embedding", [], ["resolveRankFacts"], SL_Differentiable> {
  let summary = "Token embedding lookup: ids[b,s], table[v,h] -> [b,s,h]";
  let description = [{
    Rule: b, s, h free; v contracted (a vocab-parallel table gives each rank
    the rows it owns and zeros elsewhere: a pending sum over the vocab axes).
  }];
  let arguments = (ins SL_IndexTensor:$ids, SL_FloatTensor:$table);
  let results = (outs SL_FloatTensor:$result);
}

def SL_LMHeadOp : SL_ComputeOp<"lm_head", [], [], SL_Differentiable> {
  let summary = "Output projection to the vocabulary: x[b, s, h] * w[h, v]";
  let description = [{ Rule: b, s free; v free (vocab-parallel); h contracted. }];
  let arguments = (ins SL_FloatTensor:$x, SL_FloatTensor:$weight);
  let results = (outs SL_FloatTensor:$result);
}

def SL_CrossEntropyOp : SL_ComputeOp<"cross_entropy", [],
    ["applyRemedy", "resolveRankFacts", "sentBytesPerRank"], SL_Differentiable> {
  let summary = "Mean token cross-entropy of logits against labels";
  let description = [{
    logits [b, s, v], labels [b, s] -> scalar mean loss. With the tokens
    split, each rank holds its share of the sum (a pending sum over those
    axes). The vocabulary may be split only over `vocab_axes`: vocab-parallel
    cross-entropy (all-reduce of the per-token max and sum, and of the target
    logit, over those axes). The loss is of the logits' type or f32; the
    importer makes a 16-bit model's loss f32, as Megatron computes it.
  }];
  let arguments = (ins SL_FloatTensor:$logits, SL_IndexTensor:$labels,
                   DefaultValuedAttr<StrArrayAttr, "{}">:$vocab_axes);
  let results = (outs SL_FloatTensor:$loss);
}

#endif
