// RUN: shardline-opt %s -sl-analyze=report=%t.json -o /dev/null | FileCheck %s
// RUN: python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['ranks'], r['mesh'], r['totals'], r['collectives'][0]['why'], r['elided'])" %t.json | FileCheck %s --check-prefix=JSON

// CHECK: model f on 4 ranks (cp=2 tp=2)
// CHECK: collective           axes             bytes/rank  why
// CHECK: all_gather           [tp]                    256  the linear needs it
// CHECK: reduce_scatter       [tp]                    256
// CHECK: elided     all_gather: sunk past sl.rms_norm (somewhere)
// CHECK: totals: 512 bytes sent per rank in 2 collectives (all_gather 1, reduce_scatter 1); weights 128 bytes per rank; peak activations 1280 bytes per rank
// JSON: 4 {'cp': 2, 'tp': 2} {'collective_counts': {'all_gather': 1, 'reduce_scatter': 1}, 'comm_bytes_per_rank': 512, 'peak_activation_bytes_per_rank': 1280, 'weight_bytes_per_rank': 128} the linear needs it [{'how': 'sunk past sl.rms_norm', 'location': 'somewhere', 'op': 'all_gather'}]
module attributes {sl.elided = [{op = "all_gather", location = "somewhere", how = "sunk past sl.rms_norm"}]} {
  sl.mesh @mesh(cp = 2, tp = 2)
  func.func @f(%x: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>,
               %p: tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>>)
      -> (tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>) {
    %w = sl.weight "w" : tensor<16x2xf32, #sl.layout<@mesh, [[], []]>>
    %g = sl.all_gather %x {axes = ["tp"], dim = 1, sl.reason = "the linear needs it"} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>
    %s = sl.reduce_scatter %p {axes = ["tp"], dim = 1} : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []], partial = [tp]>> -> tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
    return %g, %s : tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp], []]>>, tensor<2x8x16xf32, #sl.layout<@mesh, [[], [cp, tp], []]>>
  }
}
