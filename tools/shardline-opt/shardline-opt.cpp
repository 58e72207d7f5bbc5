//===- shardline-opt.cpp - run sl pass pipelines on IR --------------------===//

#include "shardline/Dialect/SL/IR/SL.h"
#include "shardline/InitAll.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  shardline::registerAllDialects(registry);
  shardline::registerAllPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "Shardline optimizer driver\n", registry));
}
