# Lit configuration for Shardline's IR and tool tests.
import os

import lit.formats
from lit.llvm import llvm_config

config.name = "Shardline"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "Unit", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.shardline_obj_root, "test")

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.shardline_tools_dir, append_path=True)
config.substitutions.append(("%examples", os.path.join(config.shardline_src_root, "examples")))
config.environment["FILECHECK_OPTS"] = "-enable-var-scope"

# mpirun (Debian: openmpi-bin) runs the MPI backend's tests; as root it needs
# --allow-run-as-root, which the tests pass.
import shutil
if shutil.which("mpirun"):
    config.available_features.add("mpi")
# scripts/sanitize.sh sets what mpirun passes to the ranks it launches.
llvm_config.with_system_environment(["OMPI_MCA_mca_base_env_list"])

# flatc (Debian: flatbuffers-compiler) prints a plan's payload as JSON for the
# plan tests; the schema is the runtime's.
if shutil.which("flatc"):
    config.available_features.add("flatc")
config.substitutions.append(
    ("%plan_schema", os.path.join(config.shardline_src_root, "runtime", "schema", "plan.fbs")))
