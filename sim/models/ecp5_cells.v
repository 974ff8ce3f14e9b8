// Behavioural model of the ECP5 LUT4 primitive, for simulating netlists that
// instantiate it (PEArray(impl="ecp5")) in Verilator. Output = INIT[{D,C,B,A}].
module LUT4 #(parameter [15:0] INIT = 16'h0000) (input A, input B, input C, input D, output Z);
    assign Z = INIT[{D, C, B, A}];
endmodule
