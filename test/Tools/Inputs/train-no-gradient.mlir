// A forward program through an op whose gradient is not stated (a backward
// op, sl.gelu_grad, used as a forward one): --train refuses it by name.
#tokens = #sl.layout<@mesh, [[dp], []]>
#rep = #sl.layout<@mesh, [[], []]>
module {
  sl.mesh @mesh(dp = 1, ep = 1, cp = 1, tp = 1)
  func.func @no_gradient(%ids: tensor<2x8xi32, #tokens> {sl.name = "tokens"}, %labels: tensor<2x8xi32, #tokens> {sl.name = "labels"}) -> tensor<f32> {
    %table = sl.weight "embedding.table" : tensor<32x16xf32, #rep>
    %x = sl.embedding %ids, %table : (tensor<2x8xi32, #tokens>, tensor<32x16xf32, #rep>) -> tensor<2x8x16xf32>
    %y = sl.gelu_grad %x, %x : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
    %head = sl.weight "lm_head" : tensor<16x32xf32, #rep>
    %logits = sl.lm_head %y, %head : (tensor<2x8x16xf32>, tensor<16x32xf32, #rep>) -> tensor<2x8x32xf32>
    %loss = sl.cross_entropy %logits, %labels : (tensor<2x8x32xf32>, tensor<2x8xi32, #tokens>) -> tensor<f32>
    return %loss : tensor<f32>
  }
}
