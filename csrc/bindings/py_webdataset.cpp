// pybind11 bindings: tar scans and shard indexes from the headers alone, the KeyTable, and the file
// formats' checksums.
#include "bindings/common.h"

#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "core/rng.h"
#include "core/store.h"
#include "webdataset/key_table.h"
#include "webdataset/tar_index.h"

namespace emp_bind {

using namespace emp;

void bind_webdataset(py::module_& m) {
  // Checksums as the file formats compute them: tests craft headers that only the size checks
  // can refuse.
  m.def("checksum_bytes", [](const py::bytes& data) {
    const std::string s = data;
    return checksum_bytes(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  });
  m.def("key_table_header_checksum", [](const py::bytes& data) {
    const std::string s = data;
    if (s.size() < sizeof(KeyTableHeader)) throw py::value_error("need the whole header");
    KeyTableHeader h;
    std::memcpy(&h, s.data(), sizeof(h));
    return key_table_header_checksum(h);
  });

  m.def("scan_tar",
        [](const std::string& path) {
          TarScan scan;
          {
            py::gil_scoped_release release;
            scan = scan_tar(path);
          }
          std::vector<uint64_t> offsets(scan.members.size()), sizes(scan.members.size());
          py::list names;
          for (size_t i = 0; i < scan.members.size(); ++i) {
            offsets[i] = scan.members[i].offset;
            sizes[i] = scan.members[i].size;
            names.append(py::bytes(scan.members[i].name));
          }
          return py::make_tuple(names, to_numpy(std::move(offsets)), to_numpy(std::move(sizes)), scan.file_size,
                                scan.error, scan.error_offset);
        },
        py::arg("path"), "Members (name bytes, data offset, size) of a tar file, from its headers only.");

  m.def("index_shard",
        [](const std::string& path) {
          TarScan scan;
          ShardSamples g;
          {
            py::gil_scoped_release release;
            scan = scan_tar(path);
            g = group_samples(scan);
          }
          auto bytes_array = [](const std::string& s) {
            std::vector<uint8_t> v(s.begin(), s.end());
            return to_numpy(std::move(v));
          };
          py::dict d;
          // 64-bit key hashes, so duplicate keys across the shard set are found by sorting
          // integers; equal hashes are then compared byte for byte in Python.
          std::vector<uint64_t> key_hash(g.key_offsets.size() - 1);
          for (size_t k = 0; k + 1 < g.key_offsets.size(); ++k)
            key_hash[k] = hash_bytes(g.keys.data() + g.key_offsets[k],
                                     static_cast<size_t>(g.key_offsets[k + 1] - g.key_offsets[k]), 0);
          d["key_hash"] = to_numpy(std::move(key_hash));
          d["keys"] = bytes_array(g.keys);
          d["key_offsets"] = to_numpy(std::move(g.key_offsets));
          d["exts"] = bytes_array(g.exts);
          d["ext_offsets"] = to_numpy(std::move(g.ext_offsets));
          d["member_offset"] = to_numpy(std::move(g.member_offset));
          d["member_size"] = to_numpy(std::move(g.member_size));
          d["sample_first_member"] = to_numpy(std::move(g.sample_first_member));
          return py::make_tuple(d, scan.file_size, scan.error, scan.error_offset, g.error);
        },
        py::arg("path"), "A shard's samples grouped as webdataset does, from the tar headers only.");

  py::class_<KeyTable>(m, "KeyTable")
      .def_static("create", &KeyTable::create, py::arg("path"), py::arg("max_ids"), py::arg("key_bytes"),
                  py::arg("hash_bits") = 64)
      .def_static("create_anonymous", &KeyTable::create_anonymous, py::arg("max_ids"), py::arg("key_bytes"),
                  py::arg("hash_bits") = 64)
      .def_static("open", &KeyTable::open, py::arg("path"))
      .def("id_of", &KeyTable::id_of, py::arg("url"), py::arg("key"))
      .def("find", &KeyTable::find, py::arg("url"), py::arg("key"))
      .def("key_of", [](const KeyTable& t, uint64_t id) { return py::bytes(t.key_of(id)); }, py::arg("id"))
      .def("flush", &KeyTable::flush, py::call_guard<py::gil_scoped_release>())
      .def("recover", &KeyTable::recover, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("clean", &KeyTable::clean)
      .def("__len__", &KeyTable::size)
      .def_property_readonly("collisions", &KeyTable::collisions)
      .def_property_readonly("max_ids", &KeyTable::max_ids)
      .def_property_readonly("nbytes", &KeyTable::nbytes)
      .def_property_readonly("path", &KeyTable::path);
}

}  // namespace emp_bind
