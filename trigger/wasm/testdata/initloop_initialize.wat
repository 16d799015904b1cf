;; A reactor that loops forever in _initialize: Compile must refuse it after
;; the call deadline, as ErrABI.
;; Rebuild with: wat2wasm initloop_initialize.wat -o initloop_initialize.wasm
(module
  (memory (export "memory") 1)
  (func (export "_initialize") (loop $forever (br $forever)))
  (func (export "godwit_abi_version") (result i32) (i32.const 1))
  (func (export "godwit_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "godwit_handle") (param i32 i32) (result i32) (i32.const 0)))
