// pybind11 bindings of the CPU ops: check every argument (so a bad call raises, never crashes), take
// numpy buffers without copying, and release the GIL around the work.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "ops.hpp"

namespace py = pybind11;

namespace {

template <typename... Parts>
std::string cat(const Parts&... parts) {
    std::ostringstream s;
    (s << ... << parts);
    return s.str();
}

std::string shape_str(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Contiguous, aligned (vector code assumes natural alignment) and, for outputs, writable.
void check_layout(const py::array& a, const char* fn, const char* name, bool writable = false) {
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(cat(fn, ": ", name, " must be C-contiguous, got strides of a view "
                                  "(pass np.ascontiguousarray(", name, "))"));
    if (reinterpret_cast<uintptr_t>(a.data()) % static_cast<uintptr_t>(a.itemsize()) != 0)
        throw py::value_error(cat(fn, ": ", name, " is not aligned to its ", a.itemsize(), "-byte elements"));
    if (writable && !a.writeable()) throw py::value_error(cat(fn, ": ", name, " is read-only"));
}

void check_ndim(const py::array& a, const char* fn, const char* name, py::ssize_t ndim, const char* layout) {
    if (a.ndim() != ndim)
        throw py::value_error(cat(fn, ": ", name, " must be ", layout, ", got shape ", shape_str(a)));
}

template <typename T>
void check_dtype(const py::array& a, const char* fn, const char* name, const char* want) {
    if (!a.dtype().is(py::dtype::of<T>()))
        throw py::type_error(cat(fn, ": ", name, " must be ", want, ", got ", dtype_str(a)));
}

// The caller's out= array, checked against the shape and dtype the op produces; or a new one.
py::array output(const py::object& out, const py::dtype& dtype, const std::vector<py::ssize_t>& shape,
                 const char* fn) {
    if (out.is_none()) return py::array(dtype, shape);
    if (!py::isinstance<py::array>(out))
        throw py::type_error(cat(fn, ": out must be a numpy array, got ", py::str(py::type::of(out)).cast<std::string>()));
    auto arr = py::reinterpret_borrow<py::array>(out);
    if (!arr.dtype().is(dtype))
        throw py::type_error(cat(fn, ": out must be ", py::str(dtype).cast<std::string>(), ", got ", dtype_str(arr)));
    bool same = arr.ndim() == static_cast<py::ssize_t>(shape.size());
    for (size_t i = 0; same && i < shape.size(); ++i) same = arr.shape(static_cast<py::ssize_t>(i)) == shape[i];
    if (!same) {
        py::array want(dtype, shape);
        throw py::value_error(cat(fn, ": out must have shape ", shape_str(want), ", got ", shape_str(arr)));
    }
    check_layout(arr, fn, "out", true);
    return arr;
}

ks::PackConsts pack_consts(const std::vector<double>& mean, const std::vector<double>& std) {
    if (mean.size() != 3 || std.size() != 3)
        throw py::value_error(cat("pack_frames: mean and std need 3 values each, got ", mean.size(), " and ",
                                  std.size()));
    ks::PackConsts k{};
    for (int c = 0; c < 3; ++c) {
        const float s = static_cast<float>(std[c]);
        if (!(s > 0.0f)) throw py::value_error(cat("pack_frames: std must be > 0, got std[", c, "] = ", std[c]));
        k.mean[c] = static_cast<float>(mean[c]);
        k.inv_std[c] = 1.0f / s;
    }
    return k;
}

py::array pack_frames(const py::array& frames, const std::vector<double>& mean, const std::vector<double>& std,
                      bool swap_rb, bool half, const py::object& out) {
    const char* fn = "pack_frames";
    check_dtype<uint8_t>(frames, fn, "frames", "uint8");
    check_ndim(frames, fn, "frames", 4, "[B, H, W, 3]");
    if (frames.shape(3) != 3)
        throw py::value_error(cat(fn, ": frames must be [B, H, W, 3], got shape ", shape_str(frames)));
    check_layout(frames, fn, "frames");
    const ks::PackConsts k = pack_consts(mean, std);
    const py::ssize_t b = frames.shape(0), h = frames.shape(1), w = frames.shape(2);
    py::array result = output(out, half ? py::dtype("float16") : py::dtype::of<float>(), {b, 3, h, w}, fn);
    const auto* src = static_cast<const uint8_t*>(frames.data());
    void* dst = result.mutable_data();
    {
        py::gil_scoped_release nogil;
        if (half)
            ks::pack_frames_f16(src, static_cast<uint16_t*>(dst), b, h, w, k, swap_rb);
        else
            ks::pack_frames_f32(src, static_cast<float*>(dst), b, h, w, k, swap_rb);
    }
    return result;
}

py::array gather_clips(const py::array& ring, int64_t first, int64_t count, const py::array& clip_ends, int64_t n,
                       const py::object& stream_start_obj, const py::object& out, int64_t stride) {
    const char* fn = "gather_clips";
    const char kind = ring.dtype().kind();
    if (kind != 'f' && kind != 'u' && kind != 'i' && kind != 'b')
        throw py::type_error(cat(fn, ": ring must hold numbers (float32, float16, uint8, ...), got ", dtype_str(ring)));
    if (ring.ndim() < 1) throw py::value_error(cat(fn, ": ring must be [R, ...], got a 0-d array"));
    check_layout(ring, fn, "ring");
    check_dtype<int64_t>(clip_ends, fn, "clip_ends", "int64");
    check_ndim(clip_ends, fn, "clip_ends", 1, "[B]");
    check_layout(clip_ends, fn, "clip_ends");
    const int64_t stream_start = stream_start_obj.is_none() ? first : stream_start_obj.cast<int64_t>();
    const py::ssize_t batch = clip_ends.shape(0), ring_size = ring.shape(0);
    std::vector<int64_t> rows;
    char error_kind = 0;
    const std::string err = ks::clip_rows(static_cast<const int64_t*>(clip_ends.data()), batch, n, stride, ring_size,
                                          first, count, stream_start, rows, error_kind);
    if (!err.empty()) {
        if (error_kind == 'I') throw py::index_error(cat(fn, ": ", err));
        throw py::value_error(cat(fn, ": ", err));
    }
    std::vector<py::ssize_t> shape = {batch, static_cast<py::ssize_t>(n)};
    for (py::ssize_t i = 1; i < ring.ndim(); ++i) shape.push_back(ring.shape(i));
    py::array result = output(out, ring.dtype(), shape, fn);
    const int64_t row_bytes = ring.itemsize() * (ring.ndim() > 1 ? ring.size() / ring_size : 1);
    const auto* src = static_cast<const uint8_t*>(ring.data());
    auto* dst = static_cast<uint8_t*>(result.mutable_data());
    {
        py::gil_scoped_release nogil;
        ks::gather_rows(src, dst, row_bytes, rows.data(), static_cast<int64_t>(rows.size()));
    }
    return result;
}

py::array warp_crop(const py::array& frames, const py::array& m, int64_t out_w, int64_t out_h, int border,
                    const py::object& out) {
    const char* fn = "warp_crop";
    check_dtype<uint8_t>(frames, fn, "frame", "uint8");
    const bool batched = frames.ndim() == 4;
    if (!(frames.ndim() == 3 || batched) || frames.shape(frames.ndim() - 1) != 3)
        throw py::value_error(cat(fn, ": frame must be [H, W, 3] (or frames [B, H, W, 3]), got shape ",
                                  shape_str(frames)));
    check_layout(frames, fn, "frame");
    const py::ssize_t batch = batched ? frames.shape(0) : 1;
    const py::ssize_t src_h = frames.shape(batched ? 1 : 0), src_w = frames.shape(batched ? 2 : 1);
    check_dtype<double>(m, fn, "M", "float64");
    const bool m_ok = batched ? (m.ndim() == 3 && m.shape(0) == batch && m.shape(1) == 2 && m.shape(2) == 3)
                              : (m.ndim() == 2 && m.shape(0) == 2 && m.shape(1) == 3);
    if (!m_ok)
        throw py::value_error(cat(fn, ": M must be ", batched ? "[B, 2, 3] for frames [B, H, W, 3]" : "[2, 3]",
                                  ", got shape ", shape_str(m)));
    check_layout(m, fn, "M");
    // OpenCV keeps pixel coordinates in 16 bits; so do we.
    if (src_h < 1 || src_w < 1 || src_h > 32767 || src_w > 32767)
        throw py::value_error(cat(fn, ": frame size must be 1..32767 pixels a side, got ", src_w, "x", src_h));
    if (out_w < 1 || out_h < 1 || out_w > 32767 || out_h > 32767)
        throw py::value_error(cat(fn, ": out_size must be 1..32767 pixels a side, got (", out_w, ", ", out_h, ")"));
    if (border != 0 && border != 1) throw py::value_error(cat(fn, ": border must be 0 (constant) or 1 (replicate)"));
    std::vector<py::ssize_t> shape = {static_cast<py::ssize_t>(out_h), static_cast<py::ssize_t>(out_w), 3};
    if (batched) shape.insert(shape.begin(), batch);
    py::array result = output(out, py::dtype::of<uint8_t>(), shape, fn);
    const auto* src = static_cast<const uint8_t*>(frames.data());
    const auto* mat = static_cast<const double*>(m.data());
    auto* dst = static_cast<uint8_t*>(result.mutable_data());
    {
        py::gil_scoped_release nogil;
        ks::warp_crop(src, batch, src_h, src_w, mat, dst, out_h, out_w, static_cast<ks::Border>(border));
    }
    return result;
}

}  // namespace

PYBIND11_MODULE(_cpu, mod) {
    mod.doc() = "CPU kernels of cpp_ext (OpenMP); call them through cpp_ext, which documents the arguments.";
    mod.def("pack_frames", &pack_frames, py::arg("frames"), py::arg("mean"), py::arg("std"), py::arg("swap_rb"),
            py::arg("half"), py::arg("out") = py::none());
    mod.def("gather_clips", &gather_clips, py::arg("ring"), py::arg("first"), py::arg("count"),
            py::arg("clip_ends"), py::arg("n"), py::arg("stream_start") = py::none(), py::arg("out") = py::none(),
            py::arg("stride") = 1);
    mod.def("warp_crop", &warp_crop, py::arg("frames"), py::arg("M"), py::arg("out_w"), py::arg("out_h"),
            py::arg("border"), py::arg("out") = py::none());
    mod.def("set_num_threads", &ks::set_num_threads, py::arg("n"));
    mod.def("max_threads", &ks::max_threads);
#ifdef _OPENMP
    mod.attr("openmp") = true;
#else
    mod.attr("openmp") = false;
#endif
#ifdef KS_NATIVE
    mod.attr("native") = true;
#else
    mod.attr("native") = false;
#endif
}
