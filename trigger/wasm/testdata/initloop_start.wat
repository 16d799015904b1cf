;; A module that follows the ABI but loops forever in its start section:
;; Compile must refuse it after the call deadline, as ErrABI.
;; Rebuild with: wat2wasm initloop_start.wat -o initloop_start.wasm
(module
  (memory (export "memory") 1)
  (func $start (loop $forever (br $forever)))
  (start $start)
  (func (export "godwit_abi_version") (result i32) (i32.const 1))
  (func (export "godwit_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "godwit_handle") (param i32 i32) (result i32) (i32.const 0)))
