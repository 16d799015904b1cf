;; A module whose godwit_abi_version loops forever: Compile must refuse it
;; after the call deadline, as ErrABI.
;; Rebuild with: wat2wasm initloop_version.wat -o initloop_version.wasm
(module
  (memory (export "memory") 1)
  (func (export "godwit_abi_version") (result i32) (loop $forever (br $forever)) (i32.const 1))
  (func (export "godwit_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "godwit_handle") (param i32 i32) (result i32) (i32.const 0)))
