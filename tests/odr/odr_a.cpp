// SPDX-License-Identifier: Apache-2.0
// ODR test, translation unit A: dense prefill (kernel and reference) and an error path.
#include <algorithm>
#include <attnkit/attnkit.hpp>
#include <cmath>
#include <cstring>

#include "odr.hpp"
#include "odr_problem.hpp"

namespace odr {

result run_a() {
  problem pb;
  result r;
  r.out = pb.run_kernel();
  std::vector<double> qd(pb.q.begin(), pb.q.end()), kd(pb.k.begin(), pb.k.end()),
      vd(pb.v.begin(), pb.v.end()), ref(r.out.size());
  attnkit::reference::standard_attention(pb.params(), pb.q_view(qd.data()), pb.k_view(kd.data()),
                                         pb.v_view(vd.data()), pb.o_view(ref.data()));
  for (std::size_t i = 0; i < ref.size(); ++i)
    r.max_err = std::max(r.max_err, std::abs(ref[i] - double(r.out[i])));
  r.pool = &attnkit::default_executor();
  r.cplusplus = __cplusplus;
  try {  // o with the wrong head count
    std::vector<float> o(r.out.size());
    attnkit::standard_attention(
        pb.params(), pb.q_view(pb.q.data()), pb.k_view(pb.k.data()), pb.v_view(pb.v.data()),
        attnkit::make_view(o.data(), problem::B, problem::T, 1, problem::Hq * problem::D));
  } catch (const attnkit::error& e) {
    r.threw = std::strstr(e.what(), "'o'") != nullptr;
  }
  return r;
}

}  // namespace odr
